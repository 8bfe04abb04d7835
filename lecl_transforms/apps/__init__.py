"""Applications built on the LECL bundle (as ``monai.apps``): the MONAI Label tasks in
:mod:`lecl_transforms.apps.monailabel_tasks` (imported on demand: they need the ``label`` extra,
``pip install "lecl-transforms[label]"``)."""

__all__: list[str] = []
