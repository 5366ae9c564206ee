"""Tasks: what a train step, an evaluation and a prediction compute for one kind of problem.

`TASK_KINDS` finds a kind of task by the name a workdir's model.json records ("task"): how to
build its task from that record, its evaluation transform, its preprocessing for inference and
its answers (`jaxvision.tasks.kinds.TaskKind`). A new kind registers a TaskKind subclass:

    @TASK_KINDS.register("counting")
    class CountingKind(TaskKind): ...

`TASK_WRAPPERS` wraps a built task when the record has a field of that name: an int8 model's
"quantization" (jaxvision.compress) runs the same task on its stored int8 weights.
"""

from jaxvision.registry import Registry

TASK_KINDS = Registry("task kind")
TASK_KINDS.declare("classification", "jaxvision.tasks.classification:ClassificationKind")
TASK_KINDS.declare("detection", "jaxvision.tasks.detection:DetectionKind")
TASK_KINDS.declare("image_text", "jaxvision.tasks.image_text:ImageTextKind")

# record field -> wrap(task, record) -> task, applied when model.json has that field.
TASK_WRAPPERS = Registry("task wrapper")
TASK_WRAPPERS.declare("quantization", "jaxvision.compress.quantize:quantized_record_task")
