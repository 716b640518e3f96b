#!/bin/sh
# edmc dataset convert on a small tree of PNG and JPEG images
# (tests/dataset/src, made by tests/tools/make_convert_fixtures.py): each
# transform against the images PIL makes in the reference tool's steps
# (tests/dataset/expect-*), the labels, zip output read back (by convert and
# by the training data loader), --max-images, unreadable files, and one clear
# error for each kind of bad request.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
imgdiff="$builddir/tests/tools/img_diff"
data="$srcdir/tests/dataset"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# same_images DIR EXPECT_DIR: every expected image, equal to the last bit, and no other image
same_images() {
    n=0 bad=""
    for f in "$2"/00000/*.png; do
        n=$((n + 1))
        "$imgdiff" "$1/00000/$(basename "$f")" "$f" 0 >/dev/null 2>&1 || bad="$bad $(basename "$f")"
    done
    got=$(find "$1" -name '*.png' | wc -l)
    [ -z "$bad" ] && [ "$got" -eq "$n" ] || { echo "differ:$bad; $got images, $n expected"; return 1; }
}

for t in none center-crop center-crop-wide center-crop-dhariwal; do
    res=16x16
    [ "$t" = center-crop-wide ] && res=16x8
    tap_check "convert --transform=$t --resolution=$res" "$edmc" dataset convert --source="$data/src" \
        --dest="$tmp/$t" --transform=$t --resolution=$res
    tap_check "$t: the reference's images, bit for bit" same_images "$tmp/$t" "$data/expect-$t"
done

want='{"labels": [["00000/img00000000.png", 0], ["00000/img00000001.png", 0], ["00000/img00000002.png", 0], ["00000/img00000003.png", 1], ["00000/img00000004.png", 1], ["00000/img00000005.png", 1]]}'
if [ "$(cat "$tmp/none/dataset.json")" = "$want" ]; then
    tap_ok "labels from the top-level folders (cat 0, dog 1), as json.dumps writes them"
else
    tap_not_ok "labels from the folders" "$(cat "$tmp/none/dataset.json")"
fi
if grep -q '"00000/img00000002.png"' "$tmp/center-crop-wide/dataset.json"; then
    tap_not_ok "center-crop-wide: the skipped image has no label"
else
    tap_ok "center-crop-wide: the skipped image (12 wide) is left out, numbering kept"
fi

# --- a zip: written, then read back by convert (labels from its dataset.json) and by the data loader
"$edmc" dataset convert --source="$data/src" --dest="$tmp/sub/d.zip" --transform=center-crop --resolution=16x16 \
    >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && grep -q "6 images of 16x16, labelled" "$tmp/out" && grep -q "convert: 6/6 images" "$tmp/err"; then
    tap_ok "convert to a zip (folder made), with a progress line and a summary"
else
    tap_not_ok "convert to a zip" "$(cat "$tmp/out" "$tmp/err")"
fi
tap_check "convert from the zip" "$edmc" dataset convert --source="$tmp/sub/d.zip" --dest="$tmp/back"
tap_check "the zip held the same images" same_images "$tmp/back" "$data/expect-center-crop"
if cmp -s "$tmp/back/dataset.json" "$tmp/none/dataset.json"; then
    tap_ok "the zip's dataset.json labels come back"
else
    tap_not_ok "the zip's labels" "$(cat "$tmp/back/dataset.json")"
fi
tap_check "edmc train reads the converted zip" "$edmc" train --model="$srcdir/models/edm2-tiny.edm" -D img_channels=3 \
    -D model_channels=8 -D channels_per_head=8 --data="$tmp/sub/d.zip" --outdir="$tmp/train" --batch=2 --duration=4 \
    --status=4

# --- --max-images, unlabelled trees
tap_check "--max-images=2" "$edmc" dataset convert --source="$data/src" --dest="$tmp/max" --resolution=16x16 --max-images=2
if [ "$(find "$tmp/max" -name '*.png' | wc -l)" -eq 2 ] && grep -q '"00000/img00000001.png", 0]]}' "$tmp/max/dataset.json"; then
    tap_ok "--max-images=2: two images, two labels"
else
    tap_not_ok "--max-images=2" "$(cat "$tmp/max/dataset.json")"
fi
mkdir -p "$tmp/flat"
cp "$data/src/dog/f.jpg" "$tmp/flat/1.jpg"
cp "$data/src/dog/f.jpg" "$tmp/flat/2.JPG"
tap_check "one folder: no labels" "$edmc" dataset convert --source="$tmp/flat" --dest="$tmp/flat-out"
if [ "$(cat "$tmp/flat-out/dataset.json")" = '{"labels": null}' ]; then
    tap_ok "without classes, labels are null"
else
    tap_not_ok "labels null" "$(cat "$tmp/flat-out/dataset.json")"
fi

# --- unreadable files: each named, left out, exit 1
mkdir -p "$tmp/broken/a" "$tmp/broken/b"
cp "$data/src/dog/f.jpg" "$tmp/broken/a/good.jpg"
printf 'not a jpeg' >"$tmp/broken/a/junk.jpg"
head -c 200 "$data/src/cat/b.png" >"$tmp/broken/b/cut.png"
head -c 1500 "$data/src/dog/f.jpg" >"$tmp/broken/b/cut.jpg"
printf 'GIF89a' >"$tmp/broken/b/anim.gif"
"$edmc" dataset convert --source="$tmp/broken" --dest="$tmp/broken-out" >"$tmp/out" 2>"$tmp/err"
status=$?
if [ $status -eq 1 ] && grep -q "left out .*junk.jpg: neither a PNG nor a JPEG" "$tmp/err" &&
    grep -q "left out .*cut.png: a damaged PNG\|left out .*cut.png: not a readable PNG" "$tmp/err" &&
    grep -q "left out .*cut.jpg: a damaged JPEG (Premature end of JPEG file)" "$tmp/err" &&
    grep -q "anim.gif" "$tmp/err" && grep -q "4 of 5 source files could not be read" "$tmp/err" &&
    [ -f "$tmp/broken-out/00000/img00000000.png" ] && ! grep -q "Sanitizer\|runtime error" "$tmp/err"; then
    tap_ok "unreadable files: one line each, the rest written, exit 1"
else
    tap_not_ok "unreadable files (exit $status)" "$(cat "$tmp/err")"
fi

# --- bad requests
mkdir -p "$tmp/full" "$tmp/sizes"
echo x >"$tmp/full/x"
cp "$data/src/dog/f.jpg" "$tmp/sizes/1.jpg"
cp "$data/src/cat/a.jpg" "$tmp/sizes/2.jpg"
tap_expect_error "a destination folder that is not empty" 2 "the folder must be empty" \
    "$edmc" dataset convert --source="$data/src" --dest="$tmp/full" --resolution=16x16
tap_expect_error "a missing source" 1 "cannot open --source=" "$edmc" dataset convert --source="$tmp/missing" --dest="$tmp/o1"
tap_expect_error "a source that is neither folder nor zip" 2 "neither a folder nor a .zip" \
    "$edmc" dataset convert --source="$data/src/dog/f.jpg" --dest="$tmp/o2"
tap_expect_error "a folder without images" 1 "no image files" "$edmc" dataset convert --source="$tmp/full" --dest="$tmp/o3"
tap_expect_error "--transform without --resolution" 2 "--transform needs --resolution" \
    "$edmc" dataset convert --source="$data/src" --dest="$tmp/o4" --transform=center-crop
tap_expect_error "an unknown transform" 2 "expected none, center-crop" \
    "$edmc" dataset convert --source="$data/src" --dest="$tmp/o5" --transform=crop --resolution=16x16
tap_expect_error "a bad resolution" 2 "expected WxH" "$edmc" dataset convert --source="$data/src" --dest="$tmp/o6" --resolution=16
tap_expect_error "center-crop-dhariwal not square" 2 "needs a square --resolution" \
    "$edmc" dataset convert --source="$data/src" --dest="$tmp/o7" --transform=center-crop-dhariwal --resolution=16x8
tap_expect_error "images of two sizes" 1 "every image must be of one size" \
    "$edmc" dataset convert --source="$tmp/sizes" --dest="$tmp/o8"
tap_expect_error "images that are not square" 1 "must be square and a power of two" \
    "$edmc" dataset convert --source="$data/src" --dest="$tmp/o9" --resolution=16x8
tap_expect_error "no --dest" 2 "give --source and --dest" "$edmc" dataset convert --source="$data/src"
tap_expect_error "an unknown option" 2 "unknown option '--size'" "$edmc" dataset convert --size=3
tap_expect_error "an unknown subcommand" 2 "unknown subcommand 'decode'" "$edmc" dataset decode
tap_expect_error "no subcommand" 2 "give a subcommand" "$edmc" dataset
"$edmc" dataset convert --source="$tmp/sizes" --dest="$tmp/o10.zip" >/dev/null 2>&1
if [ ! -e "$tmp/o10.zip" ] && [ -z "$(find "$tmp" -maxdepth 1 -name 'o10.zip.*')" ]; then
    tap_ok "a failed zip conversion leaves no zip behind"
else
    tap_not_ok "a failed zip conversion left a file" "$(ls "$tmp")"
fi
tap_done
