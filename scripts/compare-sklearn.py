#!/usr/bin/env python3
"""Compare `probe train --method logistic` with scikit-learn's LogisticRegression on one dump.

For each layer, probe trains a logistic probe on TRAIN (C chosen by its grouped cross-validation,
fitted on every row: --calib TRAIN) and `probe eval` measures its AUROC on EVAL. scikit-learn then
fits StandardScaler + LogisticRegression on the same rows, once with probe's chosen C (the same
objective: C·Σ loss + ½‖w‖², intercept unpenalised, so the two solutions should agree) and once
with scikit-learn's default C = 1, and scores EVAL. The script prints the AUROCs, their
differences and the cosine between the two weight vectors in raw feature space, and exits 1 when
probe's AUROC is more than --tol (0.01) from scikit-learn's at the same C.

probe does not depend on Python; this is a check for users who want to see it for themselves.
It needs numpy and scikit-learn (Debian: apt-get install python3-sklearn) and reads the
safetensors shards with numpy alone.

    scripts/compare-sklearn.py --train build/demo/dumps/train --eval build/demo/dumps/heldout \\
        --where backdoor=code [--layers 0,4] [--probe bin/probe]
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler


def read_layer(store, layer):
    """Return the [rows, n_embd] matrix of layer.N over all shards of a dump, and its manifest."""
    with open(os.path.join(store, "manifest.json")) as f:
        manifest = json.load(f)
    parts = []
    for shard in manifest["shards"]:
        with open(os.path.join(store, shard["file"]), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        t = header["layer.%d" % layer]
        dtype = {"F32": np.float32, "F16": np.float16}[t["dtype"]]
        lo, hi = t["data_offsets"]
        parts.append(np.frombuffer(data[lo:hi], dtype=dtype).reshape(t["shape"]).astype(np.float64))
    return np.concatenate(parts), manifest


def examples(store, manifest):
    """The examples of a dump in row order, each with its first row ("row"): listed in
    manifest.json (version 1) or, one JSON line each, in the shards' examples files (version 2)."""
    if "examples" in manifest:
        yield from manifest["examples"]
        return
    row = 0
    for shard in manifest["shards"]:
        with open(os.path.join(store, shard["examples_file"])) as f:
            for line in f:
                e = json.loads(line)
                e["row"] = row
                row += e["rows"]
                yield e


def select(store, manifest, where):
    """Indices of the examples that match every KEY=VALUE (meta field, group or id), and their labels."""
    idx, labels = [], []
    for e in examples(store, manifest):
        fields = dict(e.get("meta") or {}, group=e.get("group", ""), id=e["id"])
        if all(fields.get(k) == v for k, v in where) and e.get("label") is not None:
            if e["rows"] != 1:
                sys.exit("compare-sklearn: %s has %d rows; dump with --positions last or mean" % (e["id"], e["rows"]))
            idx.append(e["row"])
            labels.append(bool(e["label"]))
    return np.array(idx), np.array(labels)


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="dump to train on")
    ap.add_argument("--eval", required=True, help="held-out dump to measure AUROC on")
    ap.add_argument("--where", action="append", default=[], help="KEY=VALUE filter, as probe's --where")
    ap.add_argument("--layers", default="", help="comma-separated layers (default: all of the dump's)")
    ap.add_argument("--probe", default="bin/probe", help="the probe binary")
    ap.add_argument("--tol", type=float, default=0.01, help="largest allowed AUROC difference")
    a = ap.parse_args()
    where = [w.split("=", 1) for w in a.where]
    with open(os.path.join(a.train, "manifest.json")) as f:
        layers = [int(x) for x in a.layers.split(",")] if a.layers else json.load(f)["layers"]
    wflags = [x for w in a.where for x in ("--where", w)]

    worst = 0.0
    print("layer  C       probe AUROC  sklearn(same C)  diff      cos(w)   sklearn(C=1)")
    for layer in layers:
        with tempfile.TemporaryDirectory() as tmp:
            pf = os.path.join(tmp, "p.json")
            run([a.probe, "train", "--data", a.train, "--calib", a.train, "--layer", str(layer),
                 "--method", "logistic", "-o", pf, "--json"] + wflags)
            ev = run([a.probe, "eval", "--probe", pf, "--data", a.eval, "--json"] + wflags)
            with open(pf) as f:
                p = json.load(f)
        C = p["training"]["params"]["C"]
        mu, sd = np.array(p["normalization"]["mean"]), np.array(p["normalization"]["scale"])
        w_probe = np.array(p["weights"]) / sd  # raw feature space

        xt, mt = read_layer(a.train, layer)
        xe, me = read_layer(a.eval, layer)
        it, yt = select(a.train, mt, where)
        ie, ye = select(a.eval, me, where)
        sc = StandardScaler().fit(xt[it])
        zt, ze = sc.transform(xt[it]), sc.transform(xe[ie])
        lr = LogisticRegression(C=C, max_iter=100000, tol=1e-10).fit(zt, yt)
        lr1 = LogisticRegression(C=1.0, max_iter=100000, tol=1e-10).fit(zt, yt)
        auc_same = roc_auc_score(ye, lr.decision_function(ze))
        auc_one = roc_auc_score(ye, lr1.decision_function(ze))
        w_sk = lr.coef_[0] / sc.scale_
        cos = float(w_probe @ w_sk / (np.linalg.norm(w_probe) * np.linalg.norm(w_sk)))
        diff = ev["auroc"]["auroc"] - auc_same
        worst = max(worst, abs(diff))
        print("%5d  %-6g  %.4f       %.4f           %+.4f   %.5f  %.4f" % (layer, C, ev["auroc"]["auroc"], auc_same, diff, cos, auc_one))
    print("largest |diff| %.4f (tolerance %g)" % (worst, a.tol))
    return 1 if worst > a.tol else 0


if __name__ == "__main__":
    sys.exit(main())
