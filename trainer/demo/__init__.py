"""The offline demo (`make demo`) and its tiny pretrained GPT-2: tooling, not the product.

run.py the demo's steps; prepare.py the Redis server and the model it finds or makes;
pretrain.py the tiny model's short pretraining; tiny_model.py the tiny offline GPT-2 that the
tests and benchmarks load with `from_pretrained`, exactly as they would load `gpt2`.
"""
