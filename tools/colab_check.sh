#!/usr/bin/env bash
# Check the course's Colab path offline, in an emulated Colab: a Python 3.12 virtual environment with
# the packages Colab preinstalls, pinned below to our best knowledge of Colab's runtime (not read off
# Colab itself; update COLAB_PINS when Colab moves). Then it does what every chapter's first cell does
# on Colab, `pip install --no-deps <the course> "pydicom>=2.4"` (from this checkout instead of the
# repository URL), and checks:
#   1. the install changes no preinstalled package (pip freeze before/after: only aebonet-lib and
#      pydicom may appear), which is Colab's "no runtime restart" condition;
#   2. the installed library: `aebonet --help`, every module imports, a tiny phantom pretrain and
#      train through the CLI (32 px), and `aebonet predict --model rsna-cpu` on an RSNA sample image
#      if one is on this machine (the shipped model was saved by a newer Keras);
#   3. chapter notebooks (the paired book/*.ipynb that Colab opens) run from start to finish on the
#      phantom with the `cpu` preset, from a folder outside the repository, with the installed
#      library; a cell appended to each moves every slider and toggle the chapter left in its
#      namespace, so the widgets' callbacks run on Colab's ipywidgets 7.
# What it cannot check: the real Colab (its exact package versions, its widget front end, GPUs and
# their drivers, mounting Google Drive, the Kaggle download of the RSNA data, the install from the
# git URL, session time limits and disconnects), and the chapters on real data.
#
#   tools/colab_check.sh                    # ch1-4, ch6 and colab (ch4 and ch6 reuse ch3's and ch4's runs)
#   COLAB_CHAPTERS="ch3_pretraining ch7_beyond" tools/colab_check.sh   # ch7: about 5 more minutes
#   COLAB_CHAPTERS="ch1_reading" tools/colab_check.sh
#   COLAB_VENV=/path/venv COLAB_WORK=/path/scratch COLAB_PYTHON=python3.12 tools/colab_check.sh
# Not part of the test suite: it installs packages and takes about 10-30 minutes on two cores.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${COLAB_VENV:-$(dirname "$ROOT")/colab-venv}
WORK=${COLAB_WORK:-${TMPDIR:-/tmp}/aebonet-colab-check}
CHAPTERS=${COLAB_CHAPTERS:-"ch1_reading ch2_data ch3_pretraining ch4_regression ch6_evaluation colab"}
SAMPLE=${COLAB_RSNA_SAMPLE:-$(dirname "$ROOT")/shared/rsna_sample}
CELL_TIMEOUT=${COLAB_CELL_TIMEOUT:-3600}
# Colab's preinstalled packages (Python 3.12), as far as we know them.
COLAB_PINS=(
  "tensorflow==2.19.0" "keras==3.10.0" "tensorboard==2.19.0" "numpy==2.0.2" "pandas==2.2.2"
  "matplotlib==3.10.0" "scikit-learn==1.6.1" "ipywidgets==7.7.1" "opencv-python==4.11.0.86"
  "opencv-python-headless==4.11.0.86" "seaborn==0.13.2" "pillow==11.3.0" "tqdm==4.67.1"
  "tabulate==0.9.0" "openpyxl==3.1.5" "ipython==7.34.0" "ipykernel==6.17.1"
)
RUNNERS=(nbconvert nbclient nbformat jupyter_client)   # to execute notebooks here; Colab has its own

declare -a SUMMARY=()
FAILED=0
record() {  # record NAME STATUS SECONDS
  SUMMARY+=("$(printf '%-34s %-5s %5ss' "$1" "$2" "$3")")
  [ "$2" = FAIL ] && FAILED=1
  return 0
}
step() {  # step NAME COMMAND...: run it, log to $WORK/logs/NAME.log, record ok/FAIL and its time
  local name=$1; shift
  local start=$SECONDS
  echo "== $name"
  if "$@" >"$WORK/logs/$name.log" 2>&1; then
    record "$name" ok $((SECONDS - start))
  else
    record "$name" FAIL $((SECONDS - start))
    tail -n 15 "$WORK/logs/$name.log" | sed 's/^/   | /'
  fi
}

rm -rf "$WORK" && mkdir -p "$WORK/logs" "$WORK/nb" "$WORK/run"

# The Colab-like environment: made once, then reused.
if [ ! -x "$VENV/bin/python" ]; then
  PY=${COLAB_PYTHON:-$(command -v python3.12 || ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1)}
  [ -n "$PY" ] || { echo "no python3.12 found: set COLAB_PYTHON"; exit 2; }
  step make-venv "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
step install-colab-set "${PIP[@]}" install -q "${COLAB_PINS[@]}" "${RUNNERS[@]}"
"$VENV/bin/python" --version
"${PIP[@]}" freeze | grep -iE "^(tensorflow|keras|numpy|pandas|matplotlib|scikit-learn|ipywidgets|ipython|opencv)" | tr '\n' ' '; echo

# The chapters' first cell, from this checkout: nothing preinstalled may change.
"${PIP[@]}" uninstall -q -y aebonet-lib pydicom >/dev/null 2>&1
"${PIP[@]}" freeze | sort >"$WORK/freeze-before.txt"
# From a copy of the files git would commit (tracked and untracked, not ignored), as the git URL would
# give them: nothing left over from an earlier build (setuptools' build/ in the checkout) gets in.
mkdir -p "$WORK/src"
git -C "$ROOT" ls-files -z -co --exclude-standard | tar -C "$ROOT" --null --ignore-failed-read -T - -cf - 2>/dev/null \
  | tar -C "$WORK/src" -xf -
step install-course "${PIP[@]}" install -q --no-deps "$WORK/src" "pydicom>=2.4"
"${PIP[@]}" freeze | sort >"$WORK/freeze-after.txt"
start=$SECONDS
diff "$WORK/freeze-before.txt" "$WORK/freeze-after.txt" >"$WORK/freeze.diff"
if grep -E '^[<>]' "$WORK/freeze.diff" | grep -viqE '^> (aebonet-lib|aebonet_lib|pydicom)[ =@]'; then
  echo "pip changed preinstalled packages:"; cat "$WORK/freeze.diff"; record freeze-unchanged FAIL 0
else
  echo "pip freeze: only added $(grep '^>' "$WORK/freeze.diff" | cut -c3- | cut -d' ' -f1 | tr '\n' ' ')"
  record freeze-unchanged ok $((SECONDS - start))
fi

# The installed library, from outside the repository, with no PYTHONPATH.
unset PYTHONPATH AEBONET_DATA AEBONET_PRESET AEBONET_RUNS
export AEBONET_CACHE="$WORK/cache" TF_CPP_MIN_LOG_LEVEL=2 PATH="$VENV/bin:$PATH"
cd "$WORK/run" || exit 2
step cli-help aebonet --help
step import-all python -c '
import importlib, pkgutil, aebonet_lib
assert "site-packages" in aebonet_lib.__file__, aebonet_lib.__file__
names = [m.name for m in pkgutil.walk_packages(aebonet_lib.__path__, "aebonet_lib.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules from", aebonet_lib.__file__)'
TINY=(--data phantom:60 --size 32 --width 0.125 --epochs 1)
step cli-pretrain aebonet pretrain "${TINY[@]}" --out "$WORK/run/pre"
step cli-train aebonet train "${TINY[@]}" --encoder "$WORK/run/pre/encoder.keras" --out "$WORK/run/reg"
step cli-evaluate aebonet evaluate --model "$WORK/run/reg/model.keras" --data phantom:60
IMAGE=$(find "$SAMPLE" -name '*.png' 2>/dev/null | sort | head -n 1)
if [ -n "$IMAGE" ]; then
  step cli-predict-rsna-cpu aebonet predict --model rsna-cpu "$IMAGE"
else
  echo "no RSNA sample image under $SAMPLE: predict skipped"; record cli-predict-rsna-cpu skip 0
fi

# The chapters, as Colab opens them, with a cell that moves their widgets.
POKE='import ipywidgets as _w
_moved = []
for _name, _obj in list(globals().items()):
    if isinstance(_obj, (_w.IntSlider, _w.FloatSlider)):
        _obj.value = _obj.max if _obj.value != _obj.max else _obj.min
        _moved.append(_name)
    elif isinstance(_obj, (_w.ToggleButtons, _w.Dropdown)) and len(_obj.options) > 1:
        _obj.index = 1 if _obj.index != 1 else 0
        _moved.append(_name)
print("colab_check moved widgets:", _moved)'
for chapter in $CHAPTERS; do
  nb="$ROOT/book/$chapter.ipynb"
  [ -f "$nb" ] || { echo "no $nb"; record "nb-$chapter" FAIL 0; continue; }
  python - "$nb" "$WORK/nb/$chapter.ipynb" "$POKE" <<'EOF'
import sys, nbformat
notebook = nbformat.read(sys.argv[1], as_version=4)
notebook.cells.append(nbformat.v4.new_code_cell(sys.argv[3]))
nbformat.write(notebook, sys.argv[2])
EOF
  step "nb-$chapter" jupyter nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.timeout="$CELL_TIMEOUT" "$WORK/nb/$chapter.ipynb"
  grep -o 'colab_check moved widgets: [^"\\]*' "$WORK/nb/$chapter.ipynb" | sed 's/^/   /'
done

echo
echo "Emulated Colab: $("$VENV/bin/python" --version), $(cd "$WORK" && python -c 'import keras, tensorflow as tf, numpy, ipywidgets; print(f"TF {tf.__version__}, Keras {keras.__version__}, NumPy {numpy.__version__}, ipywidgets {ipywidgets.__version__}")' 2>/dev/null)"
printf '%s\n' "${SUMMARY[@]}"
echo "logs: $WORK/logs; executed notebooks: $WORK/nb"
exit $FAILED
