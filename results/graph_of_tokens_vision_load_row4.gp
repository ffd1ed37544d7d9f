set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_load_row4.png.tmp.25775'
$m << EOD
0.106526 0.174472 0.11489 0.119462 0.123529 0.123782 0.185616 0.0517233
0.0399127 0.124173 0.1179 0.107835 0.177964 0.108226 0.111512 0.212477
EOD
set title "Attention-Aware V-MoE (ours: relative σ=3): load (last\nepoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
