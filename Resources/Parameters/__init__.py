"""Default parameter files, shipped inside the library as DPETResponseLib.resources."""
