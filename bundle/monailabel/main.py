"""MONAI Label app of the LECL bundle: ``monailabel start_server --app bundle/monailabel --studies STACKS``.

The tasks live in the package (``lecl_transforms.apps.monailabel_tasks``); this file only wires them into a
MONAI Label app. Settings (``--conf KEY VALUE``):

* ``bundle``: the bundle folder (default: the folder above this app, i.e. ``bundle/``);
* ``model_dir``: where models trained in MONAI Label go (default: ``model/`` in this app folder);
* ``epochs``, ``patches_per_epoch``, ``fine_tune``, ``np_threshold``, ...: the server's defaults of the tasks'
  settings (left out: the bundle configs' values, ``inference.json`` and ``train.json`` + ``quick.json`` +
  ``finetune.json``).

Nothing is downloaded: the model is the bundle's ``models/model.pt`` (or the last one trained here).
"""

import os

from monailabel.interfaces.app import MONAILabelApp

from lecl_transforms.apps.monailabel_tasks import (INFER_KEYS, TRAIN_CONFIG_KEYS, TRAIN_TASK_KEYS, LECLInferTask,
                                                    LECLTrainTask, bundle_labels, bundle_metadata, checked_infer)

MODEL = "lecl"


class LECLApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.bundle_root = os.path.realpath(conf.get("bundle", os.path.join(app_dir, os.pardir)))
        self.model_dir = os.path.realpath(conf.get("model_dir", os.path.join(app_dir, "model")))
        self.infer_config = {k: conf[k] for k in (*INFER_KEYS, "label_volume") if k in conf}
        self.train_config = {k: conf[k] for k in (*TRAIN_CONFIG_KEYS, *TRAIN_TASK_KEYS) if k in conf}
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="LECL",
                         description="Nuclei in 3D immunofluorescence stacks, marker-positive or -negative, "
                         "trained from clicks", version=bundle_metadata(self.bundle_root)["version"],
                         labels=bundle_labels(self.bundle_root))

    def init_infers(self):
        return {MODEL: LECLInferTask(self.bundle_root, self.model_dir, self.infer_config)}

    def infer(self, request, datastore=None):
        # an unknown image id or a bad request value: 404 / 422 with a message naming it, not a bare 500
        return checked_infer(super().infer, request, datastore or self.datastore())

    def init_trainers(self):
        return {MODEL: LECLTrainTask(self.bundle_root, self.model_dir, self.train_config)}
