"""The detail head: a small convolutional net at half the face's resolution that refines the
restorer's output.

The ``lite`` UNet works on 128 px faces pixel-unshuffled ×4, so its finest layer is 32×32: it
can move colour and shape but draws edges only through one linear channel-to-space step. The
head sees the degraded face and the UNet's output, both unshuffled ×2 (64×64), and adds a
residual: the sharper eyes, lips and contours that the 32×32 grid cannot place. Its output
layer starts at zero, so a fresh head changes nothing. It is trained after the UNet, on the
UNet's frozen outputs (:mod:`streamrestore.train.detail_head`).

With ``references`` set, the head also sees the mean of the identity's aligned reference faces,
unshuffled the same way: the person's own detail, placed by the face alignment rather than found
by attention. Trained with references that differ in light, pose and position from the face
(and sometimes none), it learns to take from them only what fits.

With ``context`` set, a small strided branch pools features over the whole face (their mean and
spread) into a per-face scale and shift of the hidden features and a per-face gain of the change:
how much a face needs changing depends on how damaged all of it is, which the 3x3 stack cannot see
from its ~34 px window. The head trains on patches; their context comes from their whole faces
(:meth:`DetailHead.context_of`), so a patch is refined as it is inside its face.

With ``members`` > 1 the head holds that many heads of its settings, trained apart, and adds the
mean of their changes: one head's change varies with its training draw by about the acceptance
bars' margins, their mean less (:class:`~streamrestore.model.config.DetailHeadSettings`).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from streamrestore.model.config import DetailHeadSettings

__all__ = ["DetailHead"]


class DetailHead(nn.Module):
    """``forward(degraded, restored, reference=None, context=None)`` -> refined faces, all (B, 3, R, R)
    in [0, 1].

    ``reference``: the mean aligned reference face of each face's identity (B, 3, R, R); used only
    when ``settings.references``, and then None stands for "no references" (the degraded face
    takes its place, as in training). ``context``: see :meth:`forward`.

    Args:
        settings: width, depth, the unshuffle factor, whether references are seen, the whole-face
            context's width and the number of members (:class:`DetailHeadSettings`).
    """

    blur: torch.Tensor | None  # the Gaussian of reference_detail_sigma (depthwise), or None

    def __init__(self, settings: DetailHeadSettings) -> None:
        super().__init__()
        self.settings = settings
        f, ch = settings.factor, settings.channels
        inputs = 3 if settings.references else 2
        self.conv_in = nn.Conv2d(inputs * 3 * f * f, ch, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1))
            for _ in range(settings.blocks)
        )
        self.conv_out = nn.Conv2d(ch, 3 * f * f, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # a fresh head is the identity
        nn.init.zeros_(self.conv_out.bias)
        ctx = settings.context
        if ctx:
            # the degraded and the restored face, 4x4 patches then 2x down: a 128 px face gives 16x16 places
            self.context_net = nn.Sequential(nn.Conv2d(6, ctx, 4, stride=4), nn.ReLU(),
                                             nn.Conv2d(ctx, ctx, 3, stride=2, padding=1), nn.ReLU())
            # pooled mean and spread -> hidden scale and shift (2 ch) and the change's gain (3 f^2)
            self.context_out = nn.Linear(2 * ctx, 2 * ch + 3 * f * f)
            nn.init.zeros_(self.context_out.weight)  # a fresh context leaves the head as it is
            nn.init.zeros_(self.context_out.bias)
        # the first member is this module itself (a one-member head's weights keep their names)
        self.others = nn.ModuleList(DetailHead(replace(settings, members=1)) for _ in range(settings.members - 1))
        sigma = settings.reference_detail_sigma
        blur = None
        if settings.references and sigma > 0:
            radius = max(1, math.ceil(2 * sigma))
            taps = torch.exp(-((torch.arange(2 * radius + 1, dtype=torch.float32) - radius) ** 2) / (2 * sigma**2))
            taps = taps / taps.sum()
            blur = (taps[:, None] * taps[None, :]).expand(3, 1, -1, -1).clone()
        # fixed by the settings, not a weight: the model file keeps the sigma, not this kernel
        self.register_buffer("blur", blur, persistent=False)

    def reference_detail(self, reference: torch.Tensor) -> torch.Tensor:
        """What the head sees of the mean reference face: all of it, or its detail (see
        :class:`DetailHeadSettings`)."""
        if self.blur is None:
            return reference
        r = self.blur.shape[-1] // 2
        return reference - F.conv2d(F.pad(reference, (r, r, r, r), mode="replicate"), self.blur, groups=3)

    def context_of(self, degraded: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        """The whole faces' context, (B, 2 * channels + 3 * factor^2): what :meth:`forward` takes as
        ``context`` when it is given patches of these faces (this member's; each member has its own).

        Raises:
            ValueError: the head has no context (``settings.context`` is 0).
        """
        if not self.settings.context:
            raise ValueError("this head has no whole-face context (context = 0)")
        h = self.context_net(torch.cat([degraded, restored], 1)).flatten(2)
        mean = h.mean(2)
        # two passes: E[h^2] - E[h]^2 loses the spread in float16; the epsilon keeps the gradient finite at 0
        spread = (h - mean[..., None]).square().mean(2).add(1e-6).sqrt()
        return self.context_out(torch.cat([mean, spread], 1))

    def forward(self, degraded: torch.Tensor, restored: torch.Tensor,
                reference: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """``context``: :meth:`context_of` the whole faces when these are patches of them; None:
        taken from the faces given (whole faces, as at inference). Unused without ``settings.context``.
        With several members, their changes' mean (each member's context its own, from whole faces).

        Raises:
            ValueError: a ``context`` given to a head of several members (one context cannot serve
                them all; members train one by one, as one-member heads).
        """
        if context is not None and len(self.others):
            raise ValueError(f"a context cannot be given to a head of {1 + len(self.others)} members")
        x = self._inputs(degraded, restored, reference)  # once: every member sees the same inputs
        change = self._change(x, degraded, restored, context)
        if len(self.others):
            change = (change + sum(m._change(x, degraded, restored) for m in self.others)) / (1 + len(self.others))
        return (restored + F.pixel_shuffle(change, self.settings.factor)).clamp(0, 1)

    def change(self, degraded: torch.Tensor, restored: torch.Tensor,
               reference: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """This member's change to ``restored`` alone (before the clamp; :meth:`forward`'s arguments)."""
        x = self._inputs(degraded, restored, reference)
        return F.pixel_shuffle(self._change(x, degraded, restored, context), self.settings.factor)

    def _inputs(self, degraded: torch.Tensor, restored: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """What the convolutions see: the faces (and the references' detail) pixel-unshuffled, side by side."""
        f = self.settings.factor
        parts = [degraded, restored]
        if self.settings.references:
            parts.append(self.reference_detail(degraded if reference is None else reference))
        return torch.cat([F.pixel_unshuffle(p, f) for p in parts], 1)

    def _change(self, x: torch.Tensor, degraded: torch.Tensor, restored: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """This member's change from :meth:`_inputs`, still unshuffled (``degraded``, ``restored``:
        the whole faces, for the context)."""
        ch = self.settings.channels
        h = F.relu(self.conv_in(x))
        if self.settings.context:
            c = self.context_of(degraded, restored) if context is None else context
            h = h * (1 + c[:, :ch, None, None]) + c[:, ch:2 * ch, None, None]
        for block in self.blocks:
            h = h + block(h)
        change = self.conv_out(h)
        if self.settings.context:
            change = change * (1 + c[:, 2 * ch:, None, None])
        return change
