package train

import "embed"

// Sources are the trainer's own source files (Go and C), hashed into the organism cache key
// (recipe.TrainerVersion) so that any change to the trainer retrains the organism.
//
//go:embed *.go *.c *.h
var Sources embed.FS
