#!/usr/bin/python3
"""Writes tests/dataset/: a small source tree of PNG and JPEG images
(src/cat, src/dog) and, per transform, the images the reference's dataset
tool makes of them (expect-<transform>/NNNNN/imgNNNNNNNN.png), computed
here with PIL in the steps that tool takes (its transforms restated, not
imported).  Run by hand with Debian's python3-pil and python3-numpy:

    /usr/bin/python3 tests/tools/make_convert_fixtures.py tests/dataset
"""

import os
import sys

import numpy as np
import PIL.Image


def pattern(w, h, seed):
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], axis=2)
    noise = rng.randint(-40, 40, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def sources(root):
    os.makedirs(os.path.join(root, 'cat'), exist_ok=True)
    os.makedirs(os.path.join(root, 'dog'), exist_ok=True)
    PIL.Image.fromarray(pattern(40, 30, 1)).save(os.path.join(root, 'cat', 'a.jpg'), quality=90)
    rgba = np.concatenate([pattern(70, 50, 2), np.full((50, 70, 1), 128, np.uint8)], axis=2)
    PIL.Image.fromarray(rgba, 'RGBA').save(os.path.join(root, 'cat', 'b.png'))
    PIL.Image.fromarray(pattern(12, 12, 3)[:, :, 0], 'L').save(os.path.join(root, 'cat', 'c.JPEG'), format='JPEG')
    PIL.Image.fromarray(pattern(33, 47, 4)).convert('P', palette=PIL.Image.Palette.ADAPTIVE, colors=16).save(
        os.path.join(root, 'dog', 'd.png'))
    PIL.Image.fromarray(pattern(20, 20, 5)[:, :, 1], 'L').save(os.path.join(root, 'dog', 'e.png'))
    PIL.Image.fromarray(pattern(64, 64, 6)).save(os.path.join(root, 'dog', 'f.jpg'), quality=75)
    with open(os.path.join(root, 'notes.txt'), 'w') as f:
        f.write('not an image: skipped by extension\n')


# ---------------------------------------------------------------- the reference's transforms, restated

def resize(img, w, h, f):
    return np.array(PIL.Image.fromarray(img, 'RGB').resize((w, h), f))


def center_crop(img, w, h):
    c = min(img.shape[:2])
    y0, x0 = (img.shape[0] - c) // 2, (img.shape[1] - c) // 2
    return resize(img[y0:y0 + c, x0:x0 + c], w, h, PIL.Image.Resampling.LANCZOS)


def center_crop_wide(img, w, h):
    ch = int(np.round(w * img.shape[0] / img.shape[1]))
    if img.shape[1] < w or ch < h:
        return None
    band = img[(img.shape[0] - ch) // 2:(img.shape[0] + ch) // 2]
    out = np.zeros([w, w, 3], np.uint8)
    out[(w - h) // 2:(w + h) // 2, :] = resize(band, w, h, PIL.Image.Resampling.LANCZOS)
    return out


def center_crop_dhariwal(img, size):
    im = PIL.Image.fromarray(img)
    while min(*im.size) >= 2 * size:
        im = im.resize(tuple(x // 2 for x in im.size), resample=PIL.Image.Resampling.BOX)
    scale = size / min(*im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=PIL.Image.Resampling.BICUBIC)
    arr = np.array(im)
    y0, x0 = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[y0:y0 + size, x0:x0 + size]


def expect(root, name, fn):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, 'src')) for f in fs
                   if f.split('.')[-1].lower() in ('png', 'jpg', 'jpeg'))
    out = os.path.join(root, 'expect-' + name)
    for idx, path in enumerate(files):
        img = fn(np.array(PIL.Image.open(path).convert('RGB')))
        if img is None:
            continue
        os.makedirs(os.path.join(out, f'{idx:08d}'[:5]), exist_ok=True)
        PIL.Image.fromarray(img).save(os.path.join(out, f'{idx:08d}'[:5], f'img{idx:08d}.png'), compress_level=0)


def main():
    root = sys.argv[1]
    sources(os.path.join(root, 'src'))
    expect(root, 'none', lambda im: resize(im, 16, 16, PIL.Image.Resampling.LANCZOS))
    expect(root, 'center-crop', lambda im: center_crop(im, 16, 16))
    expect(root, 'center-crop-wide', lambda im: center_crop_wide(im, 16, 8))
    expect(root, 'center-crop-dhariwal', lambda im: center_crop_dhariwal(im, 16))


if __name__ == '__main__':
    main()
