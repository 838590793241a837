"""Writes sensor_only_beach.dng: datasets/photos/beach_2023.jpg as a camera's Bayer (RGGB) sensor
data, 12 bits, uncompressed, with no embedded preview (pidng 4.0.9)."""
import sys
import numpy as np
from PIL import Image
from pidng.core import RAW2DNG, DNGTags, Tag
from pidng.defs import CFAPattern, CalibrationIlluminant, DNGVersion, Orientation, PhotometricInterpretation

src, out = sys.argv[1], sys.argv[2]
rgb = np.asarray(Image.open(src).convert("RGB"), dtype=np.float64) / 255.0
h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
rgb = rgb[:h, :w]
# sRGB -> linear light: what a sensor records
lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
bpp = 12
white = (1 << bpp) - 1
raw = np.zeros((h, w), dtype=np.uint16)
raw[0::2, 0::2] = np.round(lin[0::2, 0::2, 0] * white)  # R
raw[0::2, 1::2] = np.round(lin[0::2, 1::2, 1] * white)  # G
raw[1::2, 0::2] = np.round(lin[1::2, 0::2, 1] * white)  # G
raw[1::2, 1::2] = np.round(lin[1::2, 1::2, 2] * white)  # B
# XYZ (D65) -> linear sRGB: the "camera" sees linear sRGB primaries
m = [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
ccm = [[int(round(v * 10000)), 10000] for row in m for v in row]
t = DNGTags()
t.set(Tag.ImageWidth, w)
t.set(Tag.ImageLength, h)
t.set(Tag.TileWidth, w)
t.set(Tag.TileLength, h)
t.set(Tag.Orientation, Orientation.Horizontal)
t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
t.set(Tag.SamplesPerPixel, 1)
t.set(Tag.BitsPerSample, bpp)
t.set(Tag.CFARepeatPatternDim, [2, 2])
t.set(Tag.CFAPattern, CFAPattern.RGGB)
t.set(Tag.BlackLevel, 0)
t.set(Tag.WhiteLevel, white)
t.set(Tag.ColorMatrix1, ccm)
t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
t.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
t.set(Tag.Make, "jsearch")
t.set(Tag.Model, "fixture sensor")
t.set(Tag.DNGVersion, DNGVersion.V1_4)
t.set(Tag.DNGBackwardVersion, DNGVersion.V1_2)
r = RAW2DNG()
r.options(t, path="", compress=False)
r.convert(raw, filename=out.removesuffix(".dng"))
