"""Forms of the admin's admit and transfer actions (their intermediate pages)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from patients.models import Bed
from patients.selectors import beds_free


class FreeBedField(forms.ModelChoiceField):
    """Offers the beds that are free when the page is shown, but accepts any existing bed.

    A bed taken by someone else between showing the page and submitting it must be answered by
    the service's readable refusal ("Bed X already holds an admitted patient"), not by a
    generic "Select a valid choice": the service, not this form, decides who gets a bed.
    """

    def to_python(self, value: Any) -> Bed | None:
        if value in self.empty_values:
            return None
        try:
            return Bed.objects.select_related("ward").get(pk=value)
        except (ValueError, TypeError, ValidationError, Bed.DoesNotExist) as error:
            raise ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice"
            ) from error


class BedChoiceForm(forms.Form):
    """Choose the bed to admit one patient to, or to transfer one patient to."""

    bed = FreeBedField(
        queryset=Bed.objects.none(),
        empty_label=None,
        help_text="Only beds that are free now are listed.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Evaluated per form, not once at import: which beds are free changes all the time.
        self.fields["bed"].queryset = beds_free()  # type: ignore[attr-defined]
