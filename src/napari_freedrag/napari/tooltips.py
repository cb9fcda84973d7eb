"""What each control of the dock widget does, in a user's words (shown as its tooltip).

Each text says what the control does, its default and when to change it; shortcuts are
filled in from :mod:`~napari_freedrag.napari.keybindings`, so tooltips and bindings agree.
"""

from __future__ import annotations

from napari_freedrag.napari.keybindings import SHORTCUTS, shortcut_text

GUIDE = (
    "<b>First steps</b><br>"
    "1. Press <i>New image</i>.<br>"
    "2. Click on what should move (a red handle), then where it should go (its blue "
    "target). Add more pairs the same way.<br>"
    "3. Optional: paint the mask layer where the image may change.<br>"
    "4. Press <i>Run</i> ({run}); <i>Stop</i> ({stop}) keeps what is reached.<br>"
    "{undo} / {redo} step back and forth through your edits."
)

TIPS = {
    "model": "The generative model that makes and edits the image. 'cells' is bundled; "
    "pick 'checkpoint file…' for your own StyleGAN2 file or 'latent-diffusion folder…' to "
    "edit real images. Default: cells.",
    "model_path": "The checkpoint file (StyleGAN2) or model folder (latent diffusion) to "
    "load. Only models on this computer are used: nothing is downloaded.",
    "device": "Where the model runs. 'auto' uses a GPU when one is available, else the CPU. "
    "Choose 'cpu' if the GPU runs out of memory. Default: auto.",
    "seed": "Which image the model draws: the same seed always gives the same picture. "
    "Change it and press New image to get another one. Default: 0.",
    "truncation": "How typical the drawn image is: lower values give safer, more average "
    "images, 1.0 gives the full variety (and more artefacts). Default: 0.7.",
    "source": "Edit one of your own image layers instead of drawing one from the seed: a "
    "latent-diffusion model inverts it, a StyleGAN2 model projects it (finds the closest "
    "image it can draw). The slice on screen is used; your layer is only read, never changed.",
    "prompt": "A few words describing the real image; it helps the diffusion model "
    "reconstruct it. Leave empty if unsure.",
    "lora_steps": "Fine-tune the diffusion model on this image first, for a more faithful "
    "reconstruction. Slow on a CPU; 0 (the default) skips it.",
    "projection": "How a StyleGAN2 finds your source image: W+ (default) is faithful and "
    "keeps the model as it is; W is coarser; PTI also tunes a private copy of the model for "
    "the closest match (slower). The file on disk never changes.",
    "projection_steps": "Optimisation steps of the projection; more is closer and slower "
    "(200, the default, takes seconds at 64 px on a CPU). Stop keeps what was reached.",
    "new_button": "Load the model (once) and show a fresh starting image from the seed or "
    "the source image. Shortcut: {new_image}.",
    "random_button": "Pick a random seed and show its image.",
    "method": "How points are dragged. FreeDrag (default) moves content in small checked "
    "moves and rarely loses the handle; DragGAN is the original method, useful to compare.",
    "max_steps": "The longest a run may take, in optimisation steps; it stops earlier when "
    "every handle has arrived. Default: the model's preset (e.g. 300). Raise it for long "
    "drags that stop short.",
    "run_button": "Drag every handle towards its target, starting from the edit shown. "
    "The result becomes a new edit; nothing is overwritten. Shortcut: {run}.",
    "stop_button": "Stop the run now; the image as last shown is kept as an edit. "
    "Shortcut: {stop}.",
    "reset_button": "Delete every handle and target point (the image stays).",
    "compare_button": "Run FreeDrag and then DragGAN from the same edit with the same points "
    "and show both results side by side. Each lands in the edit history, labelled with its "
    "method.",
    "undo_button": "Show the edit this one was made from. Nothing is deleted: Redo comes "
    "back. Shortcut: {undo}.",
    "redo_button": "Go forward again to the edit made from the one shown. Shortcut: {redo}.",
    "history_slider": "Every image and edit of this viewer, oldest first. Move it to show "
    "an earlier edit; Run continues from the one shown, and no edit is ever deleted.",
    "l": "Patch distance FreeDrag aims for in each small move; smaller moves are more "
    "careful but take more steps. Default: the model's preset (0.3 for StyleGAN2).",
    "d": "The longest single small move, in feature-map pixels. Lower it if handles lose "
    "what they hold; raise it for long, smooth drags. Default: the preset (3).",
    "lr": "How big each optimisation step is. Lower it if the image falls apart or the run "
    "fails with 'diverged'; raise it if nothing moves. Default: the model's preset.",
    "mask_weight": "How strongly the image outside the painted mask is kept as it was. "
    "Raise it if unmasked areas change. Only used when a mask is painted. Default: 10.",
    "preview_every": "Show the image every this many steps while running (0 = only at the "
    "end, fastest). Default: the model's preset (5).",
    "keep_frames": "Keep every preview of the next run with its edit, so 'Save movie' can "
    "write them. Off by default (it uses memory).",
    "restore_button": "Put every setting back to its default and forget the remembered "
    "values (model, seed, file names and the per-method parameters).",
    "save_path": "The file the shown edit is saved to: .png or .tif. The file records the "
    "instruction, model and parameters, and says the image is generated.",
    "save_button": "Save the edit shown to 'save to' (with its provenance inside).",
    "movie_path": "The movie file for the preview frames of the edit shown: .gif, or .mp4 "
    "when imageio-ffmpeg is installed.",
    "fps": "Frames per second of the saved movie. Default: 10.",
    "movie_button": "Write the preview frames of the run that made the edit shown (tick "
    "'keep preview frames' before Run) as a movie to 'movie file'.",
}


def tip(name: str) -> str:
    """The tooltip text of control ``name`` with the shortcuts written in."""
    return TIPS[name].format(**_keys())


def guide() -> str:
    """The short first-steps guide shown at the top of the widget."""
    return GUIDE.format(**_keys())


def _keys() -> dict[str, str]:
    return {action: shortcut_text(action) for action in SHORTCUTS}
