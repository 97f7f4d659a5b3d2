#!/usr/bin/env bash
# Make the default dataset (Fashion-MNIST) available: already there -> nothing to do;
# root -> Debian's dataset-fashion-mnist package; else -> torchvision's download when online;
# else -> a clear message (the app still starts and says the same).
set -u
PY=${PY:-.venv/bin/python}
have() { "$PY" -c "from qcore.zoo.data import load_fashion_mnist; load_fashion_mnist('test', download=False)" >/dev/null 2>&1; }
have && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian package dataset-fashion-mnist ..."
  { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null 2>&1
  have && exit 0
fi
echo "Trying to download Fashion-MNIST into ${QX_DATA_DIR:-data} ..."
"$PY" -c "from qcore.zoo.data import load_fashion_mnist; load_fashion_mnist('test'); load_fashion_mnist('train')" && exit 0
cat >&2 <<'MSG'
Fashion-MNIST is not available: it is not installed, you are not root (for apt-get), and the
download failed (offline?). Either run `sudo apt-get install dataset-fashion-mnist`, or copy the four
idx .gz files (train-images-idx3-ubyte.gz, ...) into ./data or $QX_DATA_DIR.
MSG
exit 1
