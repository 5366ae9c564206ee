"""Model serving: dynamic batching (batcher), checked image decoding (images) and the HTTP
service (app); `jaxvision serve` runs it."""
