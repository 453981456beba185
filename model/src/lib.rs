//! Kiln models: GGUF and safetensors loading, tokenizers, the Llama and GPT-2 graphs, sampling and
//! the generation loop. Nothing lives here yet: the model path is built in issues 3 (Llama /
//! SmolLM2 from GGUF) and 4 (GPT-2).
