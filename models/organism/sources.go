package organism

import "embed"

// Sources are this package's source files (corpus, scoring, tokenizer) and the data files the
// corpus is generated from (data/), hashed into the organism cache key
// (recipe.TrainerVersion) so that a change to them retrains the organism.
//
//go:embed *.go data
var Sources embed.FS
