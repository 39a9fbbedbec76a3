"""Stand-in for Slicer's ``ctk``: ctkPathLineEdit and the history of paths it keeps in QSettings."""

import qt

#: QSettings stand-in: settingKey -> paths, most recent first.
SETTINGS = {}


class ctkPathLineEdit(qt.QWidget):
    """``currentPath`` starts as the most recent path of its history (ctkPathLineEdit::retrieveHistory) and emits
    ``currentPathChanged(QString)`` when it changes, as the line edit's text does."""

    def __init__(self, className="ctkPathLineEdit", name="", properties=None):
        super().__init__(className, name, properties)
        history = SETTINGS.get(self.property("settingKey"), [])
        self._path = history[0] if history else ""

    @property
    def currentPath(self):
        return self._path

    @currentPath.setter
    def currentPath(self, path):
        if path != self._path:
            self._path = path
            self.emit("currentPathChanged(QString)", path)

    def addCurrentPathToHistory(self):
        if self._path:
            key = self.property("settingKey")
            SETTINGS[key] = [self._path, *(p for p in SETTINGS.get(key, []) if p != self._path)]
