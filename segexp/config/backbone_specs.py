"""What each backbone offers (taps, strides, preprocessing): read by validation and the builders."""

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about a keras.applications backbone that config validation needs."""

    name: str
    preprocessing: str  # "caffe" (BGR, mean subtracted), "tf" ([-1, 1]) or "none" (0..255)
    taps: dict[int, str]  # output stride -> layer whose output is tapped
    output_strides: tuple[int, ...]  # strides the deep features can be taken at
    min_size: int  # smallest input side keras.applications accepts
    imagenet_file: str  # file keras.applications downloads for weights="imagenet" ("": none)
    application: str = ""  # keras.applications network whose weights it uses (default: name)
    dilated_depth: int | None = None  # 50 or 101: rebuilt with dilated last stages


BACKBONES: dict[str, BackboneSpec] = {
    # The keras.io example: conv4's mid-bottleneck ReLU, so conv4_block6_3 and conv5 are unused.
    "resnet50": BackboneSpec(
        name="resnet50",
        preprocessing="caffe",
        taps={16: "conv4_block6_2_relu", 4: "conv2_block3_2_relu"},
        output_strides=(16,),
        min_size=32,
        imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    # Expansion ReLUs: block_13 is the first layer at stride 16, block_3 the last at stride 4.
    "mobilenetv2": BackboneSpec(
        name="mobilenetv2",
        preprocessing="tf",
        taps={16: "block_13_expand_relu", 4: "block_3_expand_relu"},
        output_strides=(16,),
        min_size=32,
        imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    # Same-padded throughout (Xception's valid-padded entry flow misaligns the strides), ImageNet
    # top-1 83.9 %, and it rescales 0..255 itself. Taps: the last stride-16 and stride-4 outputs.
    "efficientnetv2_s": BackboneSpec(
        name="efficientnetv2_s",
        preprocessing="none",
        taps={16: "block6a_expand_activation", 4: "block2d_add"},
        output_strides=(16,),
        min_size=32,
        imagenet_file="efficientnetv2-s_notop.h5",
    ),
    # The paper's backbone: all of ResNet, last stage(s) dilated; low level at the stride-4 output.
    "resnet50_dilated": BackboneSpec(
        name="resnet50_dilated",
        preprocessing="caffe",
        taps={16: "conv5_block3_out", 8: "conv5_block3_out", 4: "conv2_block3_out"},
        output_strides=(8, 16),
        min_size=32,
        imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        application="resnet50",
        dilated_depth=50,
    ),
    "resnet101_dilated": BackboneSpec(
        name="resnet101_dilated",
        preprocessing="caffe",
        taps={16: "conv5_block3_out", 8: "conv5_block3_out", 4: "conv2_block3_out"},
        output_strides=(8, 16),
        min_size=32,
        imagenet_file="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        application="resnet101",
        dilated_depth=101,
    ),
    # segexp's own small plain CNN (segexp.models.tiny_cnn) for smoke tests: no ImageNet weights.
    "tiny": BackboneSpec(
        name="tiny",
        preprocessing="tf",
        taps={16: "stage4_relu", 4: "stage2_relu"},
        output_strides=(16,),
        min_size=16,
        imagenet_file="",
    ),
}
