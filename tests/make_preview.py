"""Makes the README's preview of the solved agent: an mp4 from the video dir, as a small GIF.

    python reinforce_cartpole.py --plot video/learning-curve.png
    python tests/make_preview.py video/CartPole-v0-lr0.01-gamma0.99-seed543/trained-agent-episode-0.mp4 \
        video/solved-agent.gif
"""

import argparse

import imageio_ffmpeg
from PIL import Image


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mp4")
    p.add_argument("gif")
    p.add_argument("--scale", type=float, default=0.5, help="size relative to the video (default: 0.5)")
    p.add_argument("--every", type=int, default=2, help="keep every Nth frame (default: 2)")
    args = p.parse_args(argv)

    reader = imageio_ffmpeg.read_frames(args.mp4)
    meta = next(reader)
    width, height = meta["size"]
    size = (round(width * args.scale), round(height * args.scale))
    frames = [
        Image.frombytes("RGB", (width, height), raw).resize(size, Image.LANCZOS).quantize(colors=32)
        for i, raw in enumerate(reader) if i % args.every == 0
    ]
    duration = round(1000 * args.every / meta["fps"])
    frames[0].save(args.gif, save_all=True, append_images=frames[1:], duration=duration, loop=0, optimize=True)
    print(f"{args.gif}: {len(frames)} frames, {size[0]}x{size[1]}")


if __name__ == "__main__":
    main()
