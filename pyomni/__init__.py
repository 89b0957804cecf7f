"""pyomni: the decision core of omnichannel allocation (temporary bootstrap init)."""
from . import errors
from .model import *  # noqa: F403
