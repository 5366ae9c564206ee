"""Fields every classification config has, with neutral defaults; recipes override a few."""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Data.
    config.dataset = "digits"  # "digits", "folder" (with data_dir) or a TFDS name
    config.data_dir = config_dict.placeholder(str)  # TFDS data dir or image-folder root
    config.train_split = "train"
    config.test_split = config_dict.placeholder(str)  # default: validation, else test
    config.test_fraction = 0.2  # held-out share when the data has no test split
    config.image_size = 224
    config.crop = "inception"  # train crop: "inception", "pad" or "none"
    config.pad = 4  # pixels, for crop="pad"
    config.flip = True
    config.eval_crop_ratio = 0.875
    config.randaugment_ops = 0  # RandAugment: ops per image (0: off) ...
    config.randaugment_magnitude = 10  # ... and their magnitude (0..10)
    config.random_erasing = 0.0  # probability per image
    config.repeated_augmentation = 1  # r > 1: each batch holds B / r images r times (DeiT)
    config.mixup_alpha = 0.0  # batch mixing on the device (0 and 0: off)
    config.cutmix_alpha = 0.0
    config.mix_switch_prob = 0.5  # CutMix instead of mixup, when both are on
    config.mix_prob = 1.0  # share of batches mixed
    config.class_weights = ""  # "balanced": loss weights inverse to class frequency
    config.worker_count = 0  # input worker processes (0: in the training process)
    config.data_strict = False  # folder data: stop at an unreadable file instead of leaving it out
    # Model.
    config.model = "resnet50"
    config.model_kwargs = ml_collections.ConfigDict()
    config.dtype = "float32"  # compute dtype; parameters stay float32
    # Start from pretrained weights (.safetensors with torchvision/timm names, a big_vision
    # ViT .npz, or another run's workdir) instead of a random init; the classifier stays fresh
    # if the classes differ.
    config.init_from = ""
    config.init_new_head = False  # a fresh classifier even when the shapes match
    # Optimisation. learning_rate is for a batch of lr_batch_base; it scales linearly.
    config.batch_size = 256  # global, over all devices and hosts
    config.total_steps = 0  # 0: num_epochs over the train split
    config.num_epochs = 90.0
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.lr_batch_base = 256
    config.schedule = "cosine"  # cosine, linear, step or constant, after warmup
    config.step_boundaries = (0.3, 0.6, 0.9)  # fractions of the run, for schedule="step"
    config.warmup_epochs = 5.0
    config.lr_end_factor = 0.0  # cosine / linear end at learning_rate x this (YOLO's lrf)
    # YOLO's warmup (sgd; biases also adamw): biases' lr falls from this to the schedule's; 0: off
    config.warmup_bias_lr = 0.0
    config.warmup_momentum = config_dict.placeholder(float)  # sgd: rises from this to momentum
    config.momentum = 0.9
    config.nesterov = True
    config.weight_decay = 1e-4
    config.weight_decay_mode = "decoupled"  # or "l2" (adamw, lamb); sgd/lars always add to grads
    config.grad_clip_norm = 0.0  # 0: no clipping
    config.layer_decay = 0.0  # ViT fine-tuning: lr x decay^(depth + 1 - layer); 0: off
    config.freeze_backbone = False  # linear probe: train only the classifier
    config.ema_decay = 0.0  # EMA of the weights, evaluated beside them as eval_ema/*; 0: off
    config.ema_warmup = True
    config.ema_ramp = 0  # > 0: decay x (1 - exp(-updates / ema_ramp)), YOLO's 2000, not ema_warmup
    config.label_smoothing = 0.0
    config.microbatches = 1  # gradient accumulation: micro-batches per step
    config.remat = False  # recompute blocks in the backward pass (models with a remat option)
    config.moment_dtype = ""  # "bfloat16" halves momentum memory; "" keeps float32
    # "int8": quantization-aware training (qwix: int8 weights and activations in the forward,
    # straight-through gradients), to fine-tune a float run (init_from) for jaxvision quantize.
    config.quantize_training = config_dict.placeholder(str)
    # jaxvision prune: an .npz of 0/1 masks whose zeros stay zero through training ("": off).
    config.prune_masks = ""
    # Devices: (axis name, size) pairs over "data", "fsdp", "model"; -1 takes the remaining
    # devices. sharding: "replicated", "fsdp", "tensor" or "fsdp+tensor" (see docs/performance.md).
    config.mesh = (("data", -1),)
    config.sharding = "replicated"
    # Bookkeeping.
    config.seed = 0
    config.log_every_steps = 100
    config.eval_every_steps = 0  # 0: evaluate at the end only
    # What to evaluate: {name: {split: "test" | "train", every_steps}}; metrics are <name>/...
    # (eval/top1) and every_steps None follows eval_every_steps. Add entries in a config file.
    config.evals = ml_collections.ConfigDict(
        {"eval": {"split": "test", "every_steps": config_dict.placeholder(int)}}
    )
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.profile_steps = ""  # "a,b": a jax.profiler trace of steps a..b in <workdir>/profile
    return config


def distillation_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fields of a distillation run (experiments.distill), added to a classification config."""
    config.teacher = ""  # a trained workdir, or a weight file with teacher_model
    config.teacher_model = ""  # the teacher's model name, for a weight file
    config.teacher_image_size = 0  # a weight file's teacher input size (0: the student's)
    config.distill_temperature = 1.0  # T of the softened distributions
    config.distill_weight = 1.0  # weight of the KL term; 1 - it on the labels' cross-entropy
    return config


def gan_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fields of a GAN run (experiments.gan) on a classification config's data fields.

    Optimisation uses learning_rate (the generator's; d_learning_rate the discriminator's, 0:
    the same) with Adam(b1=adam_b1, b2=adam_b2), constant; ema_decay averages the generator.
    """
    config.model = "dcgan"
    config.conditional = False  # class-conditional: conditional BatchNorm G, projection D
    config.gan_loss = "non_saturating"  # or "hinge"
    config.latent_dim = 100
    config.g_width = 32  # the generator's last hidden stage (DCGAN's ngf)
    config.d_width = 32  # the discriminator's first stage (DCGAN's ndf)
    config.optimizer = "adam"
    config.learning_rate = 2e-4
    config.d_learning_rate = 0.0
    config.adam_b1 = 0.5
    config.adam_b2 = 0.999
    config.ema_decay = 0.999
    config.ema_warmup = True
    # FID / KID features: "digits" (jaxvision's digits classifier at 32x32: "digits-FID",
    # comparable only with itself) or "inception" (pytorch-fid's Inception pool3 from
    # fid_weights, a .safetensors: comparable with published FIDs).
    config.fid_features = "digits"
    config.fid_weights = ""
    config.evals = ml_collections.ConfigDict(
        {"eval": {"split": "train", "every_steps": config_dict.placeholder(int)}}
    )
    return config


def detection_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fields of a detection run (experiments.detection), added to the common ones.

    image_size is the square canvas every image is resized into and padded to (fixed shapes on
    the device); crop, pad and eval_crop_ratio do not apply.
    """
    config.dataset = "shapes"  # "shapes" (embedded), "coco_json" (data_dir) or "coco/2017"
    # Options of the dataset itself: "shapes" takes image_size, num_train, num_test,
    # max_objects and seed.
    config.dataset_options = ml_collections.ConfigDict()
    config.min_size = 0  # resize keeping the aspect: shorter side to this (0: to the canvas)
    config.max_size = 0  # ... and the longer side at most this (0: the canvas)
    config.max_boxes = 0  # box rows per image in a batch (0: the dataset's most, else 100)
    config.scale_jitter = ()  # (lo, hi): the shorter side drawn per training image
    config.photometric = False  # SSD's photometric distortion
    config.zoom_out = False  # SSD's zoom-out (the image on a mean-filled canvas up to 4x)
    config.iou_crop = False  # SSD's minimum-IoU crop
    config.random_crop = ()  # (lo, hi): a crop of lo..hi of each side, boxes clipped
    config.min_visible = 0.25  # a cropped box keeping less of its area is dropped
    config.trainable_backbone_layers = -1  # 0..5 backbone stages that train (-1: torchvision's)
    # The detector family's matching and post-processing options (jaxvision.tasks.retinanet_loss /
    # ssd): fg_iou_thresh, score_thresh, nms_thresh, detections_per_img, topk_candidates, ...
    config.detection = ml_collections.ConfigDict()
    config.model = "retinanet_resnet18_fpn_small"
    # YOLO's own augmentation (jaxvision.data.yolo_transforms: mosaic, random affine, HSV,
    # flips, letterbox) in place of the fields above; its options by name (mosaic,
    # close_mosaic_epochs, translate, scale, degrees, shear, hsv, fliplr, flipud).
    config.yolo_augment = False
    config.yolo_augment_options = ml_collections.ConfigDict()
    return config


def image_text_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fields of an image-text run (experiments.image_text), added to the common ones.

    Images are resized and centre-cropped to image_size, never flipped or cropped at random
    (captions say "left of"); crop, pad, flip and eval_crop_ratio do not apply.
    """
    config.dataset = "shapes_captions"  # "shapes_captions" (embedded) or "captions" (data_dir)
    # Options of the dataset itself: image_size, num_train, num_test, max_objects, seed,
    # text_length, tokenizer, tokenizer_path for "shapes_captions"; "captions": tokenizer,
    # tokenizer_path, text_length.
    config.dataset_options = ml_collections.ConfigDict()
    config.model = "siglip_tiny"  # jaxvision.models.image_text: siglip_*, clip_*
    config.flip = False
    config.crop = "none"
    # "sigmoid" (SigLIP's) or "softmax" (CLIP's) contrastive loss; "": the model's own.
    config.contrastive_loss = ""
    # Evaluators run at every evaluation (jaxvision.evaluation.image_text): "zeroshot"
    # (labelled records), "retrieval" (recall@1/5/10 both ways), "order" (captioned shapes:
    # "A left of B" vs "B left of A").
    config.image_text_evals = ("zeroshot", "retrieval", "order")
    # Zero-shot prompts: each class's text ("a red star" for the captioned shapes, else its
    # name) in every template ("{}" is the class text); the class embedding is their mean.
    config.zeroshot_templates = ("{}",)
    config.retrieval_pairs = 1000  # the first N pairs of an eval split that retrieval ranks
    config.optimizer = "adamw"
    config.weight_decay = 1e-4
    config.warmup_epochs = 0.0
    return config
