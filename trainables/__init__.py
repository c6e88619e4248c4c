"""trainables.

context: TrialContext, what a task's train is given (report, restore, DDP helpers); users import it from task.
task_data: TaskData, on_device and class_frame, the data a task hands the service; users import them from task.
loading: a task found by name, loaded (LoadedTask) and checked against its space (objective, config keys).
fingerprints: data_key and code_key, the fingerprints of a search's data and training code.
"""
