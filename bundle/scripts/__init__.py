"""Bundle-local scripts. The bundle's code lives in the installed ``lecl_transforms`` package (network, losses,
transforms, engine pieces), which the configs reference directly; this folder holds only what configs cannot say."""
