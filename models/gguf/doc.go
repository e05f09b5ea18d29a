// Package gguf reads and writes GGUF files, the container llama.cpp loads models from.
//
// A GGUF v3 file is a little-endian header (magic "GGUF", version, tensor count, key/value
// count), the key/value metadata, one info record per tensor (name, dimensions with ne0 first,
// ggml type, offset into the data section), padding to general.alignment (32 by default), and
// the tensor data, each tensor aligned the same way.
//
// The reader parses the header, metadata and tensor infos without reading tensor data and checks
// that every tensor lies inside the file, so a truncated file is an error here rather than an
// abort inside llama.cpp. Fingerprint identifies a model's weights cheaply.
package gguf
