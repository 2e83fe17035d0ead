"""Entry-point discovery and what the adapter reads from a model."""

from __future__ import annotations

import pytest
import stevedore
from marshmallow import fields, validate

from deepaas import exceptions
from deepaas.model import loading
from deepaas.model.v2.arguments import Arguments, normalize_field
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.model.v2.encoding import prediction_body


def test_module_entry_point_is_used_as_is(testmodels_installed):
    models = loading.load_models("module-model")
    spec, model = models["module-model"]
    assert spec.target == "deepaas_testmodels.module_model"
    assert model.__name__ == "deepaas_testmodels.module_model"


def test_class_entry_point_is_instantiated(testmodels_installed):
    spec, model = loading.load_models("class-model")["class-model"]
    assert type(model).__name__ == "ClassModel"
    assert model.instances == 1
    assert spec.load().instances == 1


def test_unknown_name_lists_installed_models(testmodels_installed):
    with pytest.raises(exceptions.ModelLoadError) as info:
        loading.load_models("nope")
    assert "'nope'" in info.value.message
    assert "module-model" in info.value.message
    assert "class-model" in info.value.message


def test_demo_model_by_name():
    spec, model = loading.load_models("deepaas-test")["deepaas-test"]
    assert spec.target == loading.DEMO_MODEL_TARGET
    assert model.get_metadata()["name"] == "deepaas-test"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("broken-import", "a_module_that_does_not_exist"),
        ("bad-schema", "invalid response schema"),
        ("bad-args", "not a valid argument declaration"),
    ],
)
def test_bad_models_stop_start_up_naming_the_model(
    model_sites, monkeypatch, name, text
):
    monkeypatch.syspath_prepend(str(model_sites["broken"]))
    # stevedore lists a group once per process; this test installs more models.
    monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})
    with pytest.raises(exceptions.ModelLoadError) as info:
        spec, model = loading.load_models(name)[name]
        ModelDeclaration.read(spec, model)
    assert text in info.value.message
    assert name in info.value.message


def test_old_style_enum_becomes_a_choice():
    field = normalize_field("x", fields.Str(missing="a", enum=["a", "b"]))
    assert field.load_default == "a"
    assert any(isinstance(v, validate.OneOf) for v in field.validators)


def test_file_fields_are_recognised():
    args = Arguments(
        {
            "image": fields.Field(type="file", location="form"),
            "other": fields.Field(location="form"),
            "text": fields.Str(),
        }
    )
    assert args.file_names == {"image", "other"}
    assert set(args.value_schema.fields) == {"text"}


def test_plain_dict_declaration_types_from_default():
    args = Arguments(
        {
            "n": {"default": 3, "help": "a number"},
            "s": {"default": "x"},
            "r": {"required": True, "help": "needed"},
        }
    )
    assert isinstance(args.fields["n"], fields.Int)
    assert args.fields["n"].metadata["description"] == "a number"
    assert isinstance(args.fields["s"], fields.Str)
    assert args.fields["r"].required
    with pytest.raises(exceptions.InvalidArguments) as info:
        args.load({"n": "many"})
    assert set(info.value.errors) == {"n", "r"}


def test_metadata_fallback_without_get_metadata(testmodels_installed):
    spec, model = loading.load_models("minimal")["minimal"]
    declaration = ModelDeclaration.read(spec, model)
    assert declaration.metadata["id"] == declaration.metadata["name"] == "minimal"
    assert declaration.predict_arguments.fields == {}
    assert declaration.response_schema is None


def test_dict_schema_becomes_model_prediction_response(testmodels_installed):
    spec, model = loading.load_models("class-model")["class-model"]
    schema = ModelDeclaration.read(spec, model).response_schema
    assert type(schema).__name__ == "ModelPredictionResponse"
    with pytest.raises(exceptions.InvalidResponse):
        prediction_body("class-model", schema, {"status": 1})
    with pytest.raises(exceptions.InvalidResponse):
        prediction_body("class-model", schema, "a string")
