"""The user's models: a content-based registry of a models folder and offline loading.

Importing this package sets the Hugging Face offline flags in the environment (it does not
import torch or diffusers); `loading` and `tiny` re-check them before importing diffusers.
"""

from .offline import set_offline_env

set_offline_env()
