package gguf

import "embed"

// Sources are this package's source files (the GGUF writer), hashed into the organism cache
// key (recipe.TrainerVersion): the organism is written through them.
//
//go:embed *.go
var Sources embed.FS
