"""The picture report finds each variant's counterfactual, prior and difference map among a row's images."""

from __future__ import annotations

from cxr_pack.cxr_runner.pictures import images_by_role, role_of


def test_picture_roles_from_node_titles_or_file_names() -> None:
    rec = {"outputs": ["k/cxr/full_00001_.png", "k/cxr/prior_00001_.png", "k/cxr/difference_00001_.png",
                       "k/cxr/attention_00001_.png", "k/cxr/organ_masks_00001_.png"],
           "output_titles": {"k/cxr/full_00001_.png": "Save counterfactual", "k/cxr/prior_00001_.png": "Save prior overlay",
                             "k/cxr/difference_00001_.png": "Save difference map", "k/cxr/attention_00001_.png": "Save heatmaps",
                             "k/cxr/organ_masks_00001_.png": "Save mask overlay"}}  # fmt: skip
    assert images_by_role(rec) == {"counterfactual": "k/cxr/full_00001_.png", "prior": "k/cxr/prior_00001_.png",
                                   "difference": "k/cxr/difference_00001_.png"}  # fmt: skip
    untitled = {"outputs": ["k/ComfyUI_00001_.png", "k/cxr/prior_00001_.png", "k/cxr/attention_00001_.png"]}
    assert images_by_role(untitled) == {
        "counterfactual": "k/ComfyUI_00001_.png",
        "prior": "k/cxr/prior_00001_.png",
    }
    assert role_of("k/x.png", "Save heatmaps") is None, "a titled node that is none of the three is left out"
