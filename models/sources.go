package models

import "embed"

// Sources are this package's source files (the llama model and its GGUF export), hashed into
// the organism cache key (recipe.TrainerVersion): the organism is exported through them.
//
//go:embed *.go
var Sources embed.FS
