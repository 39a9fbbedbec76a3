"""Stand-in for Slicer's ``vtk`` (the names DPETResponse.py uses at import and in its widget)."""


class vtkCommand:
    ModifiedEvent = 33
