"""GGUF weights: the tensor types and their dequantisation in torch (Q8_0, Q5_0, Q4_0, Q6_K, Q5_K, Q4_K, and the
float types), reading a MOVA component from a .gguf file, the Linear layer that keeps its weight quantised and
dequantises it in each forward, and writing .gguf files for the converter."""
