"""HF transformers `generate`: the fallback where vLLM is unavailable, and the speed baseline vLLM is
measured against (same model, prompts and token budget)."""

from __future__ import annotations

from typing import Any

from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend, TokenizerMixin


class HFBackend(TokenizerMixin, TeacherBackend):
    def __init__(
        self,
        model_path: str,
        *,
        model_id: str,
        weights_digest: str,
        dtype: str = "auto",
        max_model_len: int = 2048,
        revision: str | None = None,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = model_id
        self.weights_digest = weights_digest
        self.max_model_len = max_model_len
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_path, revision=revision)
        self.tokenizer.padding_side = "left"  # decoder-only batching: pad before the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_path, revision=revision, dtype=torch_dtype)
        self.model.to(self.device).eval()

    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        """Requests with equal sampling settings are batched together (one `generate` call per group)."""
        results: dict[int, TeacherAnswer] = {}
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(tuple(sorted(request.sampling_key().items())), []).append(index)
        for indices in groups.values():
            batch = [requests[i] for i in indices]
            for i, result in zip(indices, self._generate_group(batch)):
                results[i] = result
        return [results[i] for i in range(len(requests))]

    def _generate_group(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        import torch

        first = requests[0]
        texts = [self.render_prompt(r) for r in requests]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.device)
        sampling: dict[str, Any] = {"do_sample": first.temperature > 0}
        if first.temperature > 0:
            sampling.update(temperature=first.temperature, top_p=first.top_p)
            torch.manual_seed(first.seed)
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=first.max_tokens,
                min_new_tokens=first.max_tokens if first.ignore_eos else None,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()  # without the batch's padding
        results = []
        for ids, n_prompt in zip(new_tokens, prompt_tokens, strict=True):
            if eos in ids and not first.ignore_eos:
                ids = ids[: ids.index(eos)]
                finish = "stop"
            else:
                finish = "length" if len(ids) >= first.max_tokens else "stop"
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            results.append(TeacherAnswer(text, len(ids), finish, int(n_prompt)))
        return results

    def close(self) -> None:
        self.model = None
