"""The registered model's code: an MLflow pyfunc whose ``predict`` takes the user's raw inputs.

MLflow saves this file with the model ("models from code") and runs it when
the model is loaded, wherever that is: ``trainables`` and the task's own module
travel with the model as its code paths, the checkpoint as its artifact, and
the task's name in its ``model_config``. Nothing here imports Ray or the rest
of ``tuner``.

    model = mlflow.pyfunc.load_model("models:/cifar-best@champion")
    model.predict(images)  # uint8 (N, 32, 32, 3) -> a DataFrame: label, prob_<class>
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TaskModel(PythonModel):
    """A search's best checkpoint, rebuilt by its task; ``predict`` goes through the task's ``predict``.

    After loading, ``.network`` is the trained ``nn.Module`` (eval mode, on the
    CPU) and ``.state`` the checkpoint, for users who want the bare network
    (``model.unwrap_python_model().network``).
    """

    # The logged signature is the schema, enforced by MLflow on every predict; predict's type hints are not one
    # (MLflow would otherwise ask for them, in a warning, every time the model loads).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from trainables.checkpoint import load
        from trainables.loading import load_task

        self.task = load_task(str(context.model_config["task"]))
        self.state = load(context.artifacts["checkpoint"], map_location="cpu")
        self.network = self.task.build_model(self.state).to("cpu").eval()

    def predict(self, context, model_input, params=None):
        from trainables.loading import predict

        return predict(self.task, self.network, self.state, model_input)


mlflow.models.set_model(TaskModel())
