"""TMR-style text-motion retrieval: `model.py` (the network and losses), `train.py` (CLI),
`evaluate.py` (CLI), `api.py` (checkpoints and `load_retrieval_model`)."""

from models.retrieval.api import RetrievalEncoder, load_retrieval_model
from models.retrieval.model import TMR, RetrievalConfig

__all__ = ["TMR", "RetrievalConfig", "RetrievalEncoder", "load_retrieval_model"]
