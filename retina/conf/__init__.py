"""The Hydra configs (YAML only), shipped with the package; ``conf/`` at the top of a checkout
links here. Hydra finds them as ``pkg://retina.conf`` (see :mod:`retina.cli`)."""
