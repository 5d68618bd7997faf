"""An independent judge: a small CNN that reads digits, used to score the digits our decoders generate.

It is trained once on the 60k training images (never on the test set) and cached, so every chapter and benchmark
scores generated digits with the same judge. Its accuracy on the real test set is the ceiling for those scores.
"""

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import settings
from .checkpoints import DamagedCheckpoint, atomic_save, read_state
from .data import N_CLASSES, batches, check_images, ensure_mnist_files, read_split

with warnings.catch_warnings():  # without ipywidgets, tqdm.auto falls back to text bars: fine, no need to warn
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

JUDGE_VERSION = 1  # bump when the architecture or training recipe changes, so stale caches are not reused


class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 256), nn.ReLU(),
                                  nn.Linear(256, N_CLASSES))

    def forward(self, images):
        return self.head(self.features(check_images(images).reshape(-1, 1, 28, 28)))

    @torch.no_grad()
    def predict(self, images, batch_size=2000):
        self.eval()
        device = next(self.parameters()).device
        images = check_images(images)
        return torch.cat([self(chunk.to(device)).argmax(1) for chunk in images.split(batch_size)])

    @torch.no_grad()
    def embed(self, images, batch_size=2000):
        """The judge's view of each image: the 256 activations of its last hidden layer, (N, 256), in eval mode.
        Distances between them say how alike two digits look to the judge (metrics.precision_recall)."""
        self.eval()
        device = next(self.parameters()).device
        images = check_images(images)
        penultimate = self.head[:-1]  # Flatten, Dropout (off in eval), Linear, ReLU
        return torch.cat([penultimate(self.features(chunk.to(device).reshape(-1, 1, 28, 28)))
                          for chunk in images.split(batch_size)])


JUDGE_AGAIN = "delete it, and the judge classifier is trained again"


def read_judge(path: Path) -> tuple[DigitClassifier, float]:
    """The judge cached at `path` (on the CPU) and its accuracy; DamagedCheckpoint if the file is not a usable one,
    CheckpointError if it cannot be read."""
    state = read_state(path, ("model", "test_accuracy"), what="the cached judge classifier", advice=JUDGE_AGAIN)
    model = DigitClassifier()
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError):
        raise DamagedCheckpoint(f"{path} does not fit the judge classifier; {JUDGE_AGAIN}",
                                "its weights do not fit the judge classifier") from None
    accuracy = state["test_accuracy"]
    if not isinstance(accuracy, float) or not 0 <= accuracy <= 1:
        raise DamagedCheckpoint(f"{path} holds no test accuracy from 0 to 1; {JUDGE_AGAIN}",
                                "its test accuracy is not a number from 0 to 1")
    return model, accuracy


def judge_path() -> Path:
    suffix = "-smoke" if settings.smoke_mode() else ""
    return settings.cache_dir() / f"digit_classifier-v{JUDGE_VERSION}{suffix}.pt"


def train_digit_classifier(epochs=3, seed=0, device=None, progress=None) -> tuple[DigitClassifier, float]:
    """Train the judge on all 60k training images; return it with its accuracy on the 10k test images."""
    device = settings.pick_device(device)
    progress = settings.show_progress(progress)
    raw = ensure_mnist_files()
    train_x, train_y = read_split(raw, train=True)
    test_x, test_y = read_split(raw, train=False)
    if settings.smoke_mode():
        pick = torch.Generator().manual_seed(seed)  # random subsets: MNIST's files are ordered (never the first n)
        train_index = torch.randperm(len(train_x), generator=pick)[:3000]
        test_index = torch.randperm(len(test_x), generator=pick)[:1000]
        train_x, train_y = train_x[train_index], train_y[train_index]
        test_x, test_y = test_x[test_index], test_y[test_index]
        epochs = 1
    train_x, train_y = (train_x.float() / 255).reshape(-1, 784).to(device), train_y.to(device)
    generator = torch.Generator(device).manual_seed(seed)
    # Initialisation and dropout draw from torch's global generators: seeded here, the caller's left as they were.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = DigitClassifier().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        total_steps = epochs * -(-len(train_x) // 128)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=total_steps)
        for _ in tqdm(range(epochs), desc="judge classifier epochs", disable=not progress):
            model.train()
            for x, y in batches(train_x, train_y, batch_size=128, generator=generator):
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    accuracy = float((model.predict(test_x.float().reshape(-1, 784) / 255).cpu() == test_y).float().mean())
    return model, accuracy


def load_judge(device=None, progress=None) -> tuple[DigitClassifier, float]:
    """The cached judge and its real-test accuracy, training it first (one to four minutes on a CPU) if needed.

    A damaged cache is only a cache: the judge is trained again and replaces it, which one line on stderr says.
    """
    path = judge_path()
    device = settings.pick_device(device)
    if path.is_file():
        try:
            model, accuracy = read_judge(path)
        except DamagedCheckpoint as error:
            print(f"the judge classifier's cache {path} is damaged ({error.reason}): training the judge again, "
                  "which replaces it (one to four minutes on a CPU)", file=sys.stderr, flush=True)
        else:
            return model.to(device).eval(), accuracy
    model, accuracy = train_digit_classifier(device=device, progress=progress)
    atomic_save({"model": model.state_dict(), "test_accuracy": accuracy}, path)
    return model.eval(), accuracy
