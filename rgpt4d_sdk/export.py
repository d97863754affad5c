"""Deprecated name of `rgpt4d_sdk.conversations` (the training-conversation writer); removed in 0.3."""
import warnings

from .conversations import *  # noqa: F401,F403
from .conversations import choice_answer, export_conversations  # noqa: F401

warnings.warn("rgpt4d_sdk.export is deprecated and will be removed in 0.3; import rgpt4d_sdk.conversations "
              "(training conversations) instead.", DeprecationWarning, stacklevel=2)
