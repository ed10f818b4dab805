"""The reproduction tasks: esconv-sft, esc50-sft, gpt2-shapley."""
