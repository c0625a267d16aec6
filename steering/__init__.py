"""Turning steering-profile versions into changes in what a language model generates.

Modules (import them directly; this package imports nothing heavy on its own):
models (load/fetch a causal LM), sae (SAELens-format SAEs, steering vectors),
hooks (per-row residual-stream steering), generate (reproducible batched decoding),
engine (SteeringEngine: cached snapshots, active profile, request batching),
train / features (train an SAE offline, top-activating tokens per feature).
"""

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"  # what `ledger models fetch` installs, and a server loads unless told
