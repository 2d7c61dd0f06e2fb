"""Model folders: the manifest, loading (local folder or S3), and tiny local builds.

A model folder holds `models.json`:

    {"name": ..., "system1": "system1", "grounder": "system1",
     "sam2": {"config": "configs/sam2.1/sam2.1_hiera_l.yaml", "checkpoint": "sam2/....pt",
              "overrides": []}}

`system1` and `grounder` are folders for `from_pretrained` (a Qwen2.5-Omni thinker checkpoint
and its processor), `sam2.config` a config of the sam2 package and `sam2.checkpoint` a SAM2
checkpoint ({"model": state_dict}, loaded with weights_only=True). Production weights and the
tiny ones of `omnir1 models init-tiny` go through exactly the same loader.
"""
