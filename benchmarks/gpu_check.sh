#!/usr/bin/env bash
# GPU acceptance in one command: a bare H200 machine to a verdict in at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh                # on the GPU machine (benchmarks/README.md: what to copy first)
#   bash benchmarks/gpu_check.sh --device cpu   # CPU rehearsal: the same steps, a tiny grid, CUDA tests skipped
#
# Steps: peers (SpikingJelly 0.0.0.0.14, 2.0.0 + loguru, snnTorch from .whl/ into folders of their own),
# build (the extension, unless a current build is there), check (fastspike._C.WITH_CUDA, the kernels launch),
# tests (pytest -m cuda), bench (fastspike bench --grid acceptance), summary (PASS/FAIL against the targets).
# A failing step does not stop the later ones from reporting; the exit status is non-zero if a step failed
# or, on the GPU, if the verdict is not PASS. Files go to $OUT (default: a new folder under out/).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
DEVICE=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:-}"; shift 2 ;;
        --device=*) DEVICE="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, not '$DEVICE'" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/gpu-check-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Scratch space for what must not come back in $OUT (at most 8 files): peer folders, junit XML, the bench's
# own output folder with its per-worker logs.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastspike-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STEPS=$WORK/steps.tsv
: >"$STEPS"
export DEVICE ROOT PY OUT WORK

# 8 minutes in all, 10 s of it kept for copying the files: each step gets its cap, but never so much that
# the steps after it would get less than their floor (the floors add up to well under the budget).
BUDGET_S=470
STEP_NAMES=(peers build check tests bench summary)
declare -A CAP=([peers]=30 [build]=150 [check]=40 [tests]=180 [bench]=180 [summary]=30)
declare -A FLOOR=([peers]=5 [build]=60 [check]=15 [tests]=100 [bench]=100 [summary]=10)
START=$SECONDS

say() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$OUT/gpu_check.log"; }

step_limit() {  # seconds step $1 may take
    local name=$1 later=0 seen=0 n
    for n in "${STEP_NAMES[@]}"; do
        if [ "$seen" = 1 ]; then later=$((later + FLOOR[$n])); fi
        if [ "$n" = "$name" ]; then seen=1; fi
    done
    local left=$((BUDGET_S - (SECONDS - START) - later))
    echo $((left < CAP[$name] ? left : CAP[$name]))
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"; }

# run_step NAME LOG FUNCTION: run FUNCTION under the step's time limit, its output appended to LOG; SIGINT
# first, so pytest still writes its report; record ok / failed / timed out. Never fails itself.
run_step() {
    local name=$1 log=$2 fn=$3 limit t0 rc status detail
    limit=$(step_limit "$name")
    if [ "$limit" -lt 5 ]; then
        record "$name" "skipped" 0 "no time left in the 8-minute budget"
        say "$name: skipped, no time left"
        return 0
    fi
    say "$name: started (limit ${limit}s, log $(basename "$log"))"
    echo "=== $name (limit ${limit}s) ===" >>"$log"
    t0=$SECONDS
    set +e
    timeout --signal=INT --kill-after=10 "$limit" bash -c "$fn" >>"$log" 2>&1
    rc=$?
    set -e
    detail=$(tail -n 1 "$WORK/$name.detail" 2>/dev/null || true)
    case $rc in
        0) status=ok ;;
        124|137) status="timed out"; detail="after ${limit}s${detail:+; $detail}" ;;
        *) status=failed; detail="exit $rc${detail:+; $detail}" ;;
    esac
    record "$name" "$status" $((SECONDS - t0)) "$detail"
    say "$name: $status in $((SECONDS - t0))s${detail:+ ($detail)}"
    if [ "$status" != ok ]; then
        tail -n 25 "$log" | sed 's/^/    | /'
    fi
    return 0
}

# A step's last line in $WORK/<step>.detail goes into the summary's step table.
detail() { echo "$2" >>"$WORK/$1.detail"; }
export -f detail

# ------------------------------------------------------------------------------------------------ steps
step_peers() {
    set -euo pipefail
    cd "$ROOT"
    local wheels=(spikingjelly-0.0.0.0.14-*.whl spikingjelly-2.0.0-*.whl loguru-*.whl snntorch-*.whl) missing=() w
    if [ ! -d .whl ]; then
        if [ "$DEVICE" = cpu ]; then
            detail peers "no .whl/ folder: the bench and tests use this environment's peers"
            echo "no .whl/ folder; rehearsing with the peers installed in this environment"
            return 0
        fi
        detail peers "no .whl/ folder next to the repository's files"
        echo "No .whl/ folder in $ROOT. Before the run, in the checkout that is sent to the GPU machine:"
        echo "    mkdir -p .whl && cp ../shared/wheels/*.whl .whl/"
        echo "and pass carry=[\".whl\"] to the device call (benchmarks/README.md, GPU acceptance run)."
        return 1
    fi
    for w in "${wheels[@]}"; do
        compgen -G ".whl/$w" >/dev/null || missing+=("$w")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        detail peers "missing in .whl/: ${missing[*]}"
        echo "missing in .whl/: ${missing[*]}; copy them with: cp ../shared/wheels/*.whl .whl/"
        return 1
    fi
    local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check)
    "${pip[@]}" --target "$WORK/sj014" .whl/spikingjelly-0.0.0.0.14-*.whl
    "${pip[@]}" --target "$WORK/sj200" .whl/spikingjelly-2.0.0-*.whl .whl/loguru-*.whl
    "${pip[@]}" --target "$WORK/snntorch" .whl/snntorch-*.whl
    detail peers "SpikingJelly 0.0.0.0.14, 2.0.0 + loguru, snnTorch in folders of their own"
}

step_build() {
    set -euo pipefail
    cd "$ROOT"
    local reason
    if reason=$("$PY" -c "from fastspike import native; r = native.unavailable_reason('$DEVICE'); print(r or '')" \
                2>&1) && [ -z "$reason" ]; then
        detail build "reused: fastspike._C is current for $DEVICE"
        echo "fastspike._C is current for $DEVICE: not rebuilt"
        return 0
    fi
    echo "building: ${reason:-fastspike is not importable}"
    if [ "$DEVICE" = cuda ]; then
        MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 "$PY" -m pip install -v --no-build-isolation --no-deps -e .
    else
        # The rehearsal proves the plumbing, not the CUDA build (CI's own install compiles that).
        FASTSPIKE_NO_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip install -v --no-build-isolation --no-deps -e .
    fi
    detail build "built with pip install --no-build-isolation --no-deps -e ."
}

step_check() {
    set -euo pipefail
    cd "$ROOT"
    "$PY" benchmarks/gpu_acceptance.py check --device "$DEVICE" --detail "$WORK/check.detail"
}

step_tests() {
    set -euo pipefail
    cd "$ROOT"
    local args=(-m cuda -q -rfEs -p no:cacheprovider --junitxml="$WORK/pytest.xml")
    if [ "$DEVICE" = cuda ]; then
        # Triton compiles each kernel specialisation in the process that first runs it: spread the tests.
        if "$PY" -c "import xdist" 2>/dev/null; then args+=(-n 12); else echo "pytest-xdist missing: serial run"; fi
    fi
    local path rc=0
    path=$(peer_path "$WORK/sj014" "$WORK/snntorch")
    # tee -i: on the step's time limit pytest gets SIGINT and still prints its summary and writes its report.
    PYTHONPATH="$path" TORCHINDUCTOR_COMPILE_THREADS=2 "$PY" -m pytest "${args[@]}" | tee -i "$WORK/pytest.out" \
        || rc=$?
    detail tests "$(tail -n 1 "$WORK/pytest.out" | tr -d '=')"
    return $rc
}

step_bench() {
    set -euo pipefail
    cd "$ROOT"
    # The bench stops measuring in time to write its results before the step's limit.
    local args=(--device "$DEVICE" --grid acceptance --out "$WORK/bench" --no-progress
                --time-limit-s $((BENCH_LIMIT > 60 ? BENCH_LIMIT - 30 : BENCH_LIMIT / 2)))
    [ -d "$WORK/sj014" ] && args+=(--sj014 "$WORK/sj014")
    [ -d "$WORK/sj200" ] && args+=(--sj200 "$WORK/sj200")
    [ -d "$WORK/snntorch" ] && args+=(--snntorch "$WORK/snntorch")
    local rc=0
    "$PY" -m fastspike.bench "${args[@]}" | tee -i "$WORK/bench.out" || rc=$?
    detail bench "$(grep -m 1 -o '^[0-9]* rows ([0-9]* errors)' "$WORK/bench.out" || echo "no results written")"
    return $rc
}

step_summary() {
    set -euo pipefail
    cd "$ROOT"
    "$PY" benchmarks/gpu_acceptance.py summary --device "$DEVICE" --csv "$WORK/bench/results.csv" \
        --junit "$WORK/pytest.xml" --steps "$WORK/steps.tsv" --out "$OUT/summary.md" --verdict "$WORK/verdict"
}

# The installed peer folders first on PYTHONPATH (missing ones left out), then the caller's.
peer_path() {
    local parts=() p
    for p in "$@"; do [ -d "$p" ] && parts+=("$p"); done
    [ -n "${PYTHONPATH:-}" ] && parts+=("$PYTHONPATH")
    (IFS=:; echo "${parts[*]}")
}
export -f step_peers step_build step_check step_tests step_bench step_summary peer_path

# ------------------------------------------------------------------------------------------------ run
say "fastspike GPU acceptance check, --device $DEVICE; files in $OUT"
{
    echo "host: $(uname -srm)"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable, "| torch", torch.__version__,
               "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 || true
    if [ "$DEVICE" = cuda ]; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
        nvcc --version 2>&1 | tail -n 1 || true
    fi
} >>"$OUT/gpu_check.log"
if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    say "error: $PY's PyTorch sees no CUDA device; on a machine without a GPU run the rehearsal: --device cpu"
    exit 2
fi

run_step peers "$OUT/build.log" step_peers
run_step build "$OUT/build.log" step_build
run_step check "$OUT/gpu_check.log" step_check
run_step tests "$OUT/pytest.log" step_tests
BENCH_LIMIT=$(step_limit bench)
export BENCH_LIMIT
run_step bench "$OUT/bench.log" step_bench

# What comes back (at most 8 files): the bench's CSV, markdown and plot beside the logs; the workers' logs
# are appended to bench.log.
for f in results.csv results.md speedup_vs_spikingjelly.png; do
    if [ -f "$WORK/bench/$f" ]; then cp "$WORK/bench/$f" "$OUT/"; fi
done
for f in "$WORK"/bench/logs/*.log; do
    if [ -f "$f" ]; then { echo "=== worker log $(basename "$f") ==="; cat "$f"; } >>"$OUT/bench.log"; fi
done

run_step summary "$OUT/gpu_check.log" step_summary
if [ -f "$OUT/summary.md" ]; then cat "$OUT/summary.md"; fi
VERDICT=$(cat "$WORK/verdict" 2>/dev/null || echo "none (the summary failed)")
FAILED=$(awk -F'\t' '$2 != "ok" { printf "%s %s; ", $1, $2 }' "$STEPS")
say "done in $((SECONDS - START))s; verdict: $VERDICT; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
if [ -n "$FAILED" ]; then
    say "steps not ok: $FAILED"
    exit 1
fi
case "$VERDICT" in PASS|"REHEARSAL OK") ;; *) exit 1 ;; esac
