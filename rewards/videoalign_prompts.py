"""The prompt templates of VideoAlign's reward model, as data (VideoReward's inputs must be
worded exactly as in training). Source: KwaiVGI/VideoAlign ``prompt_template.py`` (MIT License,
Copyright (c) 2025 Kling Team, Kuaishou Technology); the texts are reproduced verbatim, the
code that fills them is ours (rewards/videoalign.py). Each line is one string literal, so
trailing spaces survive editors.
"""

# dimension -> (name, description), used by the video_score and simple templates
DIMENSIONS: dict[str, tuple[str, str]] = {
    "VQ": ("visual quality", "the quality of the video in terms of clearness, resolution, brightness, and color"),
    "TA": ("text-to-video alignment", "the alignment between the text prompt and the video content and motion"),
    "MQ": ("motion quality", "the quality of the motion in terms of consistency, smoothness, and completeness"),
    "Overall": (
        "Overall Performance",
        "the overall performance of the video in terms of visual quality, text-to-video alignment, and motion quality",
    ),
}

# template type (data_config.prompt_template_type) -> text with {text_prompt}, and for
# video_score / simple also {dimension_name} and {dimension_description}
TEMPLATES: dict[str, str] = {
    "video_score": (
        "\n"
        "Suppose you are an expert in judging and evaluating the quality of AI-generated videos,\n"
        "please watch the frames of a given video and see the text prompt for generating the video,\n"
        "then give scores based on its {dimension_name}, i.e., {dimension_description}.\n"
        "Output a float number from 1.0 to 5.0 for this dimension,\n"
        "the higher the number is, the better the video performs in that sub-score,\n"
        "the lowest 1.0 means Bad, the highest 5.0 means Perfect/Real (the video is like a real video).\n"
        'The text prompt used for generation is "{text_prompt}".\n'
    ),
    "simple": (
        "\n"
        "Please evaluate the {dimension_name} of a generated video. Consider {dimension_description}.\n"
        'The text prompt used for generation is "{text_prompt}".\n'
    ),
    "detailed_special": (
        "\n"
        "You are tasked with evaluating a generated video based on three distinct criteria: Visual Quality, Motion Quality, and Text Alignment. Please provide a rating from 0 to 10 for each of the three categories, with 0 being the worst and 10 being the best. Each evaluation should be independent of the others.\n"
        "\n"
        "**Visual Quality:**  \n"
        "Evaluate the overall visual quality of the video, with a focus on static factors. The following sub-dimensions should be considered:\n"
        "- **Reasonableness:** The video should not contain any significant biological or logical errors, such as abnormal body structures or nonsensical environmental setups.\n"
        "- **Clarity:** Evaluate the sharpness and visibility of the video. The image should be clear and easy to interpret, with no blurring or indistinct areas.\n"
        "- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).\n"
        "- **Aesthetic and Creativity:** Assess the artistic aspects of the video, including the color scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense of harmony and balance.\n"
        "- **Safety:** The video should not contain harmful or inappropriate content, such as political, violent, or adult material. If such content is present, the image quality and satisfaction score should be the lowest possible. \n"
        "\n"
        "Please provide the ratings of Visual Quality: <|VQ_reward|>\n"
        "END\n"
        "\n"
        "**Motion Quality:**  \n"
        "Assess the dynamic aspects of the video, with a focus on dynamic factors. Consider the following sub-dimensions:\n"
        "- **Stability:** Evaluate the continuity and stability between frames. There should be no sudden, unnatural jumps, and the video should maintain stable attributes (e.g., no fluctuating colors, textures, or missing body parts).\n"
        "- **Naturalness:** The movement should align with physical laws and be realistic. For example, clothing should flow naturally with motion, and facial expressions should change appropriately (e.g., blinking, mouth movements).\n"
        "- **Aesthetic Quality:** The movement should be smooth and fluid. The transitions between different motions or camera angles should be seamless, and the overall dynamic feel should be visually pleasing.\n"
        "- **Fusion:** Ensure that elements in motion (e.g., edges of the subject, hair, clothing) blend naturally with the background, without obvious artifacts or the feeling of cut-and-paste effects.\n"
        "- **Clarity of Motion:** The video should be clear and smooth in motion. Pay attention to any areas where the video might have blurry or unsteady sections that hinder visual continuity.\n"
        "- **Amplitude:** If the video is largely static or has little movement, assign a low score for motion quality.\n"
        "\n"
        "Please provide the ratings of Motion Quality: <|MQ_reward|>\n"
        "END\n"
        "\n"
        "**Text Alignment:**  \n"
        "Assess how well the video matches the textual prompt across the following sub-dimensions:\n"
        "- **Subject Relevance** Evaluate how accurately the subject(s) in the video (e.g., person, animal, object) align with the textual description. The subject should match the description in terms of number, appearance, and behavior.\n"
        "- **Motion Relevance:** Evaluate if the dynamic actions (e.g., gestures, posture, facial expressions like talking or blinking) align with the described prompt. The motion should match the prompt in terms of type, scale, and direction.\n"
        "- **Environment Relevance:** Assess whether the background and scene fit the prompt. This includes checking if real-world locations or scenes are accurately represented, though some stylistic adaptation is acceptable.  \n"
        "- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how well the video adheres to this style.\n"
        "- **Camera Movement Relevance:** Check if the camera movements (e.g., following the subject, focus shifts) are consistent with the expected behavior from the prompt.\n"
        "\n"
        "Textual prompt - {text_prompt}\n"
        "Please provide the ratings of Text Alignment: <|TA_reward|>\n"
        "END\n"
    ),
}

# VideoAlign's "detailed" template is "detailed_special" without the three reward-token lines,
# asking for all three ratings at the end instead.
TEMPLATES["detailed"] = (
    TEMPLATES["detailed_special"]
    .replace("Please provide the ratings of Visual Quality: <|VQ_reward|>\nEND\n\n", "")
    .replace("Please provide the ratings of Motion Quality: <|MQ_reward|>\nEND\n", "")
    .replace(
        "Please provide the ratings of Text Alignment: <|TA_reward|>\nEND\n",
        "Please provide the ratings of Visual Quality, Motion Quality, and Text Alignment.\n",
    )
)
