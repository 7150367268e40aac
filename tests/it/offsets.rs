// offsets
