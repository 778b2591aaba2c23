#!/usr/bin/env bash
# Install mess, then run the main job on a small real example: render labelled classical pieces
# (music21 corpus + fluidsynth) and fetch Wesnoth's tagged soundtrack, extract musicnn embeddings (musicnn-msd and -mtt together, and a timbre layer)
# into a local store (SQLite + float16 arrays), find which layer encodes which aspect, build the
# FAISS index and answer "what sounds like this track / this artist, and why".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
MESS=.venv/bin/mess
STORE=demo/store
export MESS_STORE=$STORE

$MESS demo render demo/music --composers bach,palestrina,monteverdi,mozart,haydn,josquin --per-composer 5
$MESS demo wesnoth demo/wesnoth || echo "(no Wesnoth soundtrack, for the reason above: continuing with the rendered pieces only)"
# exit status 3: finished, but some files failed (Wesnoth ships one silent track); each is named above
$MESS extract demo --model musicnn --store $STORE || [ $? -eq 3 ]
$MESS extract demo --model dsp --store $STORE || [ $? -eq 3 ]
$MESS info --store $STORE
$MESS probe --model musicnn --store $STORE
$MESS index --model musicnn --store $STORE
$MESS similar 1 -k 5 --model musicnn --store $STORE
$MESS similar 1 -k 5 --model musicnn --aspect timbre --exclude-same-artist --store $STORE
$MESS evaluate --model musicnn --label composer --store $STORE
$MESS artists similar Bach -k 5 --model musicnn --store $STORE
$MESS artists discrimination --model musicnn --store $STORE
echo "done: store in $STORE, reports (probe heatmap, evaluation plot) in $STORE/reports; try: $MESS serve --store $STORE"
