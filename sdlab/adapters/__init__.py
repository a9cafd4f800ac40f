"""Adapters users exchange and apply at generation time: LoRA (:mod:`.lora`), textual-inversion
embeddings (:mod:`.embeddings`), A1111's ``<lora:name:weight>`` prompt syntax and user folders
(:mod:`.networks`), applied per call without changing the user's pipeline (:mod:`.apply`).
Training them is the ``sdlab.finetune`` lab's; this package is core and imports only the core."""
