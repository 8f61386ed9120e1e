"""TMR-style text-motion retrieval: `model.py` (RetrievalConfig, the network and losses), `train.py`
(TrainConfig, the loop; `python -m models train retrieval`), `evaluate.py` (`python -m models evaluate
retrieval`), `api.py` (its checkpoint entries and `load` / `load_retrieval_model`)."""

from models.retrieval.api import RetrievalEncoder, load, load_retrieval_model
from models.retrieval.model import TMR, RetrievalConfig

__all__ = ["TMR", "RetrievalConfig", "RetrievalEncoder", "load", "load_retrieval_model"]
