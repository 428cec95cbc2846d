"""Model choices read in one plain query.

Django's ``ModelChoiceIterator`` reads the choices with ``QuerySet.iterator()``, which on
PostgreSQL opens a server-side cursor (``DECLARE ... WITH HOLD``, ``FETCH``, ``CLOSE``: three
round trips, and a result PostgreSQL materialises) for what is a handful of rows: the clusters,
the GPU models of a filter form. These read them as a list, in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django_filters
from django import forms


class ListedChoiceIterator(forms.models.ModelChoiceIterator):
    def __iter__(self) -> Iterator[Any]:
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in list(self.queryset.all()):
            yield self.choice(obj)


class ListedModelChoiceField(forms.ModelChoiceField):
    iterator = ListedChoiceIterator


class ListedModelChoiceFilter(django_filters.ModelChoiceFilter):
    field_class = ListedModelChoiceField
