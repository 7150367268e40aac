// debug_offsets
