"""Stand-in for ``slicer.parameterNodeWrapper``: typed parameters with the defaults of Slicer's serializers,
stored on the module's parameter node; connectGui writes each value to the widget whose SlicerParameterName names
it and reads it back on change, as Slicer's GUI connectors do. A pathlib.Path goes to a ctkPathLineEdit as
``str(value)`` (so ``Path()``, the default, shows "."); Slicer has no connector from another type to that widget."""

import pathlib
import typing

import ctk


def _isPath(datatype):
    return isinstance(datatype, type) and issubclass(datatype, pathlib.PurePath)


def _default(datatype):
    if datatype in (bool, int, float, str) or _isPath(datatype):
        return datatype()
    return None  # a node


def parameterNodeWrapper(classtype):
    types = typing.get_type_hints(classtype)
    defaults = {name: classtype.__dict__.get(name, _default(datatype)) for name, datatype in types.items()}

    def __init__(self, parameterNode):
        self.parameterNode, self._guis = parameterNode, {}
        for name, value in defaults.items():
            parameterNode.values.setdefault(name, value)

    def connectGui(self, gui):
        connections = []
        for widget in vars(gui).values():
            name = widget.property("SlicerParameterName")
            if not name:
                continue
            if isinstance(widget, ctk.ctkPathLineEdit):
                if not _isPath(types[name]):
                    raise RuntimeError(f"no GUI connector for parameter {name} ({types[name]}) to a ctkPathLineEdit")
                widget.currentPath = str(getattr(self, name))

                def changed(path, name=name):
                    setattr(self, name, types[name](path))

                widget.connect("currentPathChanged(QString)", changed)
                connections.append((widget, "currentPathChanged(QString)", changed))
            else:
                widget.boundValue = getattr(self, name)
        tag = len(self._guis) + 1
        self._guis[tag] = connections
        return tag

    def disconnectGui(self, tag):
        for widget, signature, slot in self._guis.pop(tag, []):
            widget.disconnect(signature, slot)

    def field(name):
        def write(self, value):
            self.parameterNode.values[name] = value

        return property(lambda self: self.parameterNode.values[name], write)

    for name in types:
        setattr(classtype, name, field(name))
    classtype.__init__, classtype.connectGui, classtype.disconnectGui = __init__, connectGui, disconnectGui
    return classtype
