"""GPU models as Hikube documents them, sizing, the comparison and the advisor."""
