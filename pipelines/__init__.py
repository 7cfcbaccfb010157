"""Diffusers pipeline classes for genrl's own models and export of aligned models."""

# class name (a pipeline folder's model_index.json ``_class_name``) -> the module defining it, so the
# embedded tasks' folders load with their own class (diffusers only knows its own pipeline classes)
PIPELINE_MODULES = {"DigitsPipeline": "pipelines.digits", "MovingDigitsPipeline": "pipelines.moving_digits"}
