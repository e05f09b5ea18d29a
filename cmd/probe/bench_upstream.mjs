// bench-upstream.mjs times upstream llama.cpp as users run it from Node: the prebuilt llama.cpp
// of the npm package node-llama-cpp (installed by `probe bench` into build/bench/node; embedded in the probe binary, which writes it there). It
// decodes the same token sequences as probe's decode-only measurement — one sequence at a time,
// the KV cache cleared in between, logits for the last token only — and prints one JSON object.
//
// usage: node bench-upstream.mjs MODEL.gguf TOKENS.json THREADS BATCH CTX REPEATS
// TOKENS.json is a JSON array of token-id arrays.
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, tokensFile, threadsArg, batchArg, ctxArg, repeatsArg] = process.argv.slice(2);
const prompts = JSON.parse(fs.readFileSync(tokensFile, "utf8"));
const threads = Number(threadsArg), batchSize = Number(batchArg), contextSize = Number(ctxArg), repeats = Number(repeatsArg);

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: threads });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({ contextSize, batchSize, threads: { ideal: threads, min: threads }, sequences: 1, flashAttention: false });
const sequence = context.getSequence();

async function pass() {
	const t0 = process.hrtime.bigint();
	let tokens = 0;
	for (const p of prompts) {
		await sequence.clearHistory();
		await sequence.evaluateWithoutGeneratingNewTokens(p);
		tokens += p.length;
	}
	return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, tokens };
}

await pass(); // warm-up: page in the weights, start the threads
const runs = [];
for (let i = 0; i < repeats; i++) runs.push(await pass());
console.log(JSON.stringify({
	llama_cpp_release: llama.llamaCppRelease?.release ?? String(llama.llamaCppRelease ?? ""),
	build: llama.buildType, gpu: llama.gpu, threads: context.currentThreads,
	tokens: runs[0].tokens, seconds: runs.map((r) => r.seconds),
}));
await context.dispose();
await model.dispose();
await llama.dispose();
