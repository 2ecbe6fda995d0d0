"""Weight precision per segment: names and byte costs (`precision`), low-bit linears (`linear`),
the GGUF's own 4-bit blocks (`gguf`), the lean LLaMA layer (`decoder`), its compiled decode step (`compiled`)
and the per-precision copies of a model's layers (`weights`)."""
from splitrl.quant.precision import INT4_GROUP_SIZE, LOW_BIT, PRECISIONS, check_precision, linear_weight_bytes

__all__ = ["INT4_GROUP_SIZE", "LOW_BIT", "PRECISIONS", "check_precision", "linear_weight_bytes"]
